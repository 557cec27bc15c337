"""What ``unisteer eval axbench`` calls: concept data and saved deltas in, the AxBench run out.

:func:`eval_axbench` reads the concept data and the instructions, matches each delta to its
concept (:func:`delta_dirs_by_concept`, :func:`~unisteer.evaluate.axbench.concepts.
resolve_concept`) and hands the rest to :func:`~unisteer.evaluate.axbench.run.run_axbench`,
which writes everything into ``out_dir`` atomically, shows tqdm progress and resumes from what
``out_dir`` already holds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from unisteer.control.spec import ControlSpec
from unisteer.core.delta import Delta
from unisteer.errors import DataError
from unisteer.evaluate.axbench.concepts import read_concepts, resolve_concept
from unisteer.evaluate.axbench.protocol import AxBenchSettings, load_alpaca_instructions
from unisteer.evaluate.axbench.run import AxBenchReport, run_axbench
from unisteer.evaluate.axbench.store import DeltaSource, as_delta
from unisteer.evaluate.judges.base import Judge


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
        key = str(meta.get("concept_id", meta.get("concept", p.name)))
        if key in out:
            raise DataError(f"two deltas for concept {key!r}: {out[key]} and {p}")
        out[key] = p
    return out


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
    controller: ControlSpec | None = None,
) -> AxBenchReport | None:
    """The AxBench steering evaluation of one delta per concept.

    Args:
        concepts_path: AxBench concept data (e.g. ``concept10/prod_2b_l10_v1``).
        deltas: concept key (id, ``concept_<id>`` or description) → delta or saved delta
            directory. ``None`` evaluates the unsteered model (one entry, factor 0) on every
            concept of ``concept_ids`` (default: all).
        judge: rates the generations; ``None`` only generates (rate later with
            :func:`unisteer.evaluate.axbench.run.rescore`).
        factors: the multiplier grid (default per delta kind, see
            :func:`unisteer.evaluate.axbench.protocol.default_factors`).
        instructions: the AlpacaEval file or its rows (default: found as
            :func:`unisteer.evaluate.axbench.protocol.find_alpaca_eval` says).
        method: the name the generations are stored under (one directory may hold several
            methods, e.g. a baseline and the steered model).
        baseline: a stored method to compute the winrate against.
        controller: how ``m`` is chosen (default ``fixed``: ``factors`` are multipliers);
            ``kl_budget`` and ``static_kl`` take KL budgets as ``factors`` (see
            :func:`unisteer.evaluate.axbench.run.run_axbench`).
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
            resolved[concept.concept_id] = as_delta(source, model, tokenizer)
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
        controller=controller,
    )
