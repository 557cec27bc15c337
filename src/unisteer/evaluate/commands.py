"""What ``unisteer eval axbench`` and ``unisteer eval accuracy`` call.

Both take a loaded model, write everything into ``out_dir`` atomically, show tqdm progress and
resume from what ``out_dir`` already holds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from unisteer.core.delta import Delta
from unisteer.data.pairs import PolarityPair
from unisteer.errors import DataError
from unisteer.evaluate.accuracy import accuracy_by_m
from unisteer.evaluate.axbench.concepts import Concept, read_concepts
from unisteer.evaluate.axbench.protocol import AxBenchSettings, load_alpaca_instructions
from unisteer.evaluate.axbench.run import AxBenchReport, run_axbench
from unisteer.evaluate.axbench.store import slug, write_parquet_atomic
from unisteer.evaluate.judges.base import Judge
from unisteer.files import write_text_atomic

DeltaSource = Delta | str | Path


# -- deltas and concepts -----------------------------------------------------------------------


def _delta_meta(path: Path) -> dict[str, Any]:
    meta_path = path / "delta.json" if path.is_dir() else path
    try:
        data = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read the delta metadata {meta_path}: {e}") from None
    inner = data.get("meta") if isinstance(data, dict) else None
    return inner if isinstance(inner, dict) else {}


def delta_dirs_by_concept(paths: Sequence[str | Path]) -> dict[str, Path]:
    """Saved delta directories keyed by the concept they steer toward.

    The key is ``meta["concept_id"]`` of the delta when recorded, else ``meta["concept"]``,
    else the directory name (``"3"``, ``"concept_3"`` or a concept description all work as
    keys in :func:`eval_axbench`).
    """
    out: dict[str, Path] = {}
    for p in map(Path, paths):
        meta = _delta_meta(p)
        key = meta.get("concept_id", meta.get("concept", p.name))
        key = str(key)
        if key in out:
            raise DataError(f"two deltas for concept {key!r}: {out[key]} and {p}")
        out[key] = p
    return out


def resolve_concept(key: str | int, concepts: Sequence[Concept]) -> Concept:
    """The concept a key names: an id (``3``, ``"3"``, ``"concept_3"``) or a description."""
    by_id = {c.concept_id: c for c in concepts}
    text = str(key).strip()
    digits = text.removeprefix("concept").lstrip("_-")
    if digits.lstrip("-").isdigit() and int(digits) in by_id:
        return by_id[int(digits)]
    for c in concepts:
        if c.concept == text:
            return c
    raise DataError(
        f"no concept {key!r} in the concept data (ids {sorted(by_id)[:10]}...); key deltas "
        "by concept id or description"
    )


def _load(source: DeltaSource, model: Any, tokenizer: Any) -> Delta:
    if isinstance(source, Delta):
        return source
    from unisteer.core.io import load_delta

    return load_delta(source, model, tokenizer=tokenizer)


# -- judges -------------------------------------------------------------------------------------


def make_judge(
    kind: str,
    *,
    concepts_path: str | Path | None = None,
    model: Any = None,
    tokenizer: Any = None,
    judge_model: str | None = None,
    base_url: str | None = None,
    temperature: float = 0.0,
    api_key_env: str = "OPENAI_API_KEY",
    concurrency: int = 4,
    timeout: float = 60.0,
    max_retries: int = 3,
    cache_dir: str | Path | None = None,
    embeddings: str = "auto",
    proxy_nll: bool = True,
    concept_ids: Sequence[int] | None = None,
) -> Judge:
    """A judge by kind.

    * ``"proxy"``: fitted on ``concepts_path`` (only on ``concept_ids`` when given); the base
      ``model`` adds the NLL fluency statistic unless ``proxy_nll=False``.
    * ``"http"``: ``judge_model`` at ``base_url`` (OpenAI-compatible; key from ``api_key_env``).
    * ``"local"``: ``judge_model`` is a local model path or name, loaded with
      :func:`unisteer.load_model`.
    """
    if kind == "proxy":
        if concepts_path is None:
            raise ValueError("the proxy judge is trained on concept data: pass concepts_path")
        from unisteer.evaluate.judges.proxy import ProxyJudge

        use_model = model if proxy_nll else None
        return ProxyJudge.fit(
            concepts_path,
            model=use_model,
            tokenizer=tokenizer if use_model is not None else None,
            embeddings=embeddings,
            concept_ids=concept_ids,
        )
    if kind == "http":
        from unisteer.evaluate.judges.http import DEFAULT_BASE_URL, HTTPJudge

        return HTTPJudge(
            judge_model or "gpt-4o-mini",
            base_url=base_url or DEFAULT_BASE_URL,
            temperature=temperature,
            api_key_env=api_key_env,
            concurrency=concurrency,
            timeout=timeout,
            max_retries=max_retries,
            cache_dir=cache_dir,
        )
    if kind == "local":
        if not judge_model:
            raise ValueError("the local judge needs judge_model (a model path or name)")
        from unisteer.evaluate.judges.local import LocalJudge
        from unisteer.model.load import load_model

        jm, jt = load_model(judge_model)
        return LocalJudge(jm, jt, name=f"local:{judge_model}")
    raise ValueError(f"judge must be 'proxy', 'http' or 'local', got {kind!r}")


# -- AxBench ------------------------------------------------------------------------------------


def eval_axbench(
    model: Any,
    tokenizer: Any,
    concepts_path: str | Path,
    deltas: Mapping[str, DeltaSource] | None,
    judge: Judge | None,
    factors: Sequence[float] | None,
    out_dir: str | Path,
    *,
    instructions: str | Path | pd.DataFrame | Sequence[str] | None = None,
    concept_ids: Sequence[int] | None = None,
    method: str = "steered",
    baseline: str | None = None,
    settings: AxBenchSettings | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> AxBenchReport | None:
    """The AxBench steering evaluation of one delta per concept.

    Args:
        concepts_path: AxBench concept data (e.g. ``concept10/prod_2b_l10_v1``).
        deltas: concept key (id, ``concept_<id>`` or description) → delta or saved delta
            directory. ``None`` evaluates the unsteered model (one entry, factor 0) on every
            concept of ``concept_ids`` (default: all).
        judge: rates the generations; ``None`` only generates (rate later with
            :func:`unisteer.evaluate.axbench_run.rescore`).
        factors: the multiplier grid (default per delta kind, see
            :func:`unisteer.evaluate.axbench.default_factors`).
        instructions: the AlpacaEval file or its rows (default: found as
            :func:`unisteer.evaluate.axbench.find_alpaca_eval` says).
        method: the name the generations are stored under (one directory may hold several
            methods, e.g. a baseline and the steered model).
        baseline: a stored method to compute the winrate against.
    """
    concepts = read_concepts(concepts_path)
    if isinstance(instructions, pd.DataFrame):
        rows: pd.DataFrame | Sequence[str] = instructions
    elif instructions is None or isinstance(instructions, str | Path):
        rows = load_alpaca_instructions(instructions)
    else:
        rows = list(instructions)
    resolved: dict[int, Delta | None] = {}
    if deltas is None:
        wanted = set(concept_ids) if concept_ids is not None else None
        for c in concepts:
            if wanted is None or c.concept_id in wanted:
                resolved[c.concept_id] = None
    else:
        for key, source in tqdm(deltas.items(), desc="loading deltas", disable=not progress):
            concept = resolve_concept(key, concepts)
            if concept_ids is not None and concept.concept_id not in concept_ids:
                continue
            if concept.concept_id in resolved:
                raise DataError(f"two deltas for concept {concept.concept_id}")
            resolved[concept.concept_id] = _load(source, model, tokenizer)
    if not resolved:
        raise DataError("no concept to evaluate")
    return run_axbench(
        model,
        tokenizer,
        concepts,
        resolved,
        judge,
        out_dir,
        instructions=rows,
        factors=factors,
        settings=settings,
        method=method,
        baseline=baseline,
        batch_size=batch_size,
        progress=progress,
    )


# -- accuracy -----------------------------------------------------------------------------------


def _pairs_hash(pairs: Sequence[PolarityPair]) -> str:
    h = hashlib.sha256()
    for p in pairs:
        h.update(json.dumps(p.key).encode())
    return h.hexdigest()[:16]


def eval_accuracy(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PolarityPair],
    deltas: Mapping[str, DeltaSource | None],
    ms: Sequence[float],
    out_dir: str | Path,
    *,
    progress: bool = True,
    **score_kwargs: Any,
) -> pd.DataFrame:
    """Accuracy (the model prefers A_p) of each delta at each m; a ``None`` delta is the base
    model, scored at m = 0 only.

    Writes ``accuracy/<name>.parquet`` (per pair and m), ``accuracy.parquet`` and
    ``accuracy.json`` (per delta and m: accuracy, n, mean PrefOdds). Stored (delta, m) results
    for the same pairs are reused.
    """
    out = Path(out_dir)
    data_hash = _pairs_hash(pairs)
    summaries = []
    for name, source in tqdm(deltas.items(), desc="accuracy", disable=not progress):
        grid = [0.0] if source is None else [float(m) for m in ms]
        part = out / "accuracy" / f"{slug(name)}.parquet"
        stored = pd.read_parquet(part) if part.is_file() else pd.DataFrame()
        if not stored.empty and set(stored["data_hash"]) != {data_hash}:
            raise DataError(f"{part} was computed on other pairs; use another output directory")
        have = set(stored["m"].astype(float)) if not stored.empty else set()
        todo = [m for m in grid if m not in have]
        if todo:
            delta = None if source is None else _load(source, model, tokenizer)
            _, table = accuracy_by_m(
                model, tokenizer, pairs, delta, todo, progress=progress, **score_kwargs
            )
            table.insert(0, "delta", name)
            table["data_hash"] = data_hash
            stored = pd.concat([stored, table], ignore_index=True) if not stored.empty else table
            write_parquet_atomic(part, stored)
        rows = stored[stored["m"].isin(grid)]
        summary = (
            rows.groupby("m", sort=True)
            .agg(
                accuracy=("prefers_positive", "mean"),
                n=("prefers_positive", "size"),
                pref_odds=("pref_odds", "mean"),
            )
            .reset_index()
        )
        summary.insert(0, "delta", name)
        summaries.append(summary)
    result = pd.concat(summaries, ignore_index=True) if summaries else pd.DataFrame()
    write_parquet_atomic(out / "accuracy.parquet", result)
    write_text_atomic(
        out / "accuracy.json",
        json.dumps(
            {
                "pairs": len(pairs),
                "data_hash": data_hash,
                "results": json.loads(result.to_json(orient="records")),
            },
            indent=2,
        )
        + "\n",
    )
    return result
