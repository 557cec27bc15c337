"""Running the AxBench protocol: generate, rate, select, report — resumable at every step.

For each concept, every (instruction, factor) row of :func:`~unisteer.evaluate.axbench.
steering_rows` is generated once under the concept's delta (per-row multipliers, so a whole
factor grid shares batches) and stored; each generation is then rated on the three criteria by
the judge and stored. Re-running skips stored generations and stored ratings, so an
interrupted run resumes, and rating with another judge never regenerates. Every row's sampling
seed is derived from (seed, concept, instruction, factor): a resumed run produces the same
texts as an uninterrupted one.

Under a controller (:class:`unisteer.control.spec.ControlSpec`) the ``factor`` column is the
family's setting: ``m`` for ``fixed``, the KL budget ``kappa`` for ``kl_budget`` (``m_t`` chosen
token by token; each generation's trace is stored as ``m_trace``) and for ``static_kl`` (one
constant ``m`` per kappa, from the KL profile of greedy rollouts of the concept's *selection*
instructions, stored in ``run.json``, so the reporting instructions never inform it). Selection
and reporting are unchanged: the best setting of each controller is chosen on instructions
0–4 and reported on 5–9. ``m_mean`` is the mean multiplier over a generation's tokens.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from unisteer.control.calibrate import kl_profile
from unisteer.control.generate import generate_controlled
from unisteer.control.spec import ControlSpec
from unisteer.core.delta import Delta
from unisteer.errors import DataError
from unisteer.evaluate.axbench.concepts import Concept
from unisteer.evaluate.axbench.protocol import (
    KAPPA_FACTORS,
    SCORE_COLUMNS,
    AxBenchSettings,
    add_harmonic_mean,
    default_factors,
    select_factors,
    steering_rows,
    summarize,
    winrate,
)
from unisteer.evaluate.axbench.store import (
    GENERATION_KEY,
    EvalStore,
    slug,
    text_hash,
)
from unisteer.evaluate.judges.base import Judge, PromptJudge, RatingRequest
from unisteer.evaluate.judges.prompts import CRITERIA, parse_rating
from unisteer.files import write_parquet_atomic, write_text_atomic
from unisteer.generation import generate_detailed, row_seed


def delta_hash(delta: Delta | None) -> str:
    """A short hash of a delta's kind, site and tensors ("none" without a delta)."""
    if delta is None:
        return "none"
    h = hashlib.sha256(f"{delta.kind}|{delta.site}".encode())
    for name, tensor in sorted(delta.tensors().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _check_settings(store: EvalStore, method: str, settings: dict[str, Any]) -> None:
    stored = store.read_run().get("methods", {}).get(method, {}).get("generation")
    if stored is not None and stored != settings:
        raise DataError(
            f"{store.root} already holds generations of method {method!r} made with other "
            f"settings ({stored}, now {settings}); use another output directory or method name"
        )


#: The rollouts of ``static_kl``'s profile: greedy, this many new tokens.
PROFILE_TOKENS = 32


def _profile(
    model: Any,
    tokenizer: Any,
    store: EvalStore,
    method: str,
    concept: Concept,
    delta: Delta,
    rows: pd.DataFrame,
    spec: ControlSpec,
    settings: AxBenchSettings,
) -> tuple[list[float], list[float]]:
    """``static_kl``'s KL profile for a concept, from the selection instructions (stored in
    ``run.json`` and read back on resume)."""
    key = f"{method}/{concept.concept_id}"
    stored = store.read_run().get("profiles", {}).get(key)
    if stored is not None and stored.get("spec") == spec.describe():
        return list(stored["grid"]), list(stored["percentile"])
    select = rows[rows["split"] == "select"].drop_duplicates("input_id")
    assert spec.m_max is not None
    grid, pct = kl_profile(
        model, tokenizer, select["instruction"].tolist(), delta, spec.m_max, points=spec.points,
        q=spec.q, positions=settings.positions,  # type: ignore[arg-type]
        max_new_tokens=PROFILE_TOKENS,
    )  # fmt: skip
    entry = {"spec": spec.describe(), "grid": list(grid), "percentile": list(pct)}
    store.update_run(profiles={key: entry})
    return list(grid), list(pct)


def _generate(
    model: Any,
    tokenizer: Any,
    todo: pd.DataFrame,
    delta: Delta | None,
    seeds: list[int],
    settings: AxBenchSettings,
    spec: ControlSpec,
    profile: tuple[list[float], list[float]] | None,
    batch_size: int,
) -> pd.DataFrame:
    """``text, n_tokens, finished, seed, m_mean`` (and ``m_trace`` under ``kl_budget``) for
    the rows of ``todo``, in its order."""
    factors = [float(f) for f in todo["factor"]]
    sampling: dict[str, Any] = {
        "positions": settings.positions, "max_new_tokens": settings.max_new_tokens,
        "temperature": settings.temperature, "top_p": settings.top_p, "top_k": settings.top_k,
        "batch_size": batch_size,
    }  # fmt: skip
    prompts = [str(x) for x in todo["instruction"]]
    records: list[dict[str, Any]] = [{} for _ in prompts]
    if delta is not None and spec.adaptive:
        for value in sorted(set(factors)):
            idx = [i for i, f in enumerate(factors) if f == value]
            gens = generate_controlled(
                model, tokenizer, [prompts[i] for i in idx], delta, spec.at(value),
                seed=[seeds[i] for i in idx], **sampling,
            )  # fmt: skip
            for i, g in zip(idx, gens, strict=True):
                records[i] = {
                    "text": g.text, "n_tokens": len(g.token_ids), "finished": g.finished,
                    "seed": str(seeds[i]), "m_mean": sum(g.m) / len(g.m) if g.m else 0.0,
                    "m_trace": list(g.m),
                }  # fmt: skip
        return pd.DataFrame(records)
    if delta is None:
        ms = [0.0] * len(todo)
    elif spec.needs_profile:
        ms = [spec.at(f, profile).candidates[0] for f in factors]
    else:
        ms = factors
    plain = generate_detailed(
        model, tokenizer, prompts, delta=delta, m=ms if delta is not None else 1.0, seed=seeds,
        **sampling,
    )  # fmt: skip
    for i, h in enumerate(plain):
        records[i] = {
            "text": h.text, "n_tokens": len(h.token_ids), "finished": h.finished,
            "seed": str(h.seed), "m_mean": float(ms[i]),
        }  # fmt: skip
    return pd.DataFrame(records)


def generate_concept(
    model: Any,
    tokenizer: Any,
    store: EvalStore,
    method: str,
    concept: Concept,
    delta: Delta | None,
    factors: Sequence[float],
    instructions: pd.DataFrame | Sequence[str],
    settings: AxBenchSettings,
    *,
    batch_size: int = 16,
    chunk_batches: int = 4,
    controller: ControlSpec | None = None,
) -> pd.DataFrame:
    """All generations of one concept (stored ones are reused, the rest generated and stored).
    ``factors`` are the settings of ``controller`` (default ``fixed``: multipliers)."""
    spec = controller or ControlSpec()
    if delta is not None and spec.name != "fixed" and spec.m_max is None:
        raise ValueError(f"controller {spec.name} needs m_max (see ControlSpec.with_m_max)")
    all_rows = steering_rows(concept, instructions, factors, settings.n_instructions)
    rows = all_rows
    dhash = delta_hash(delta)
    done = store.generations(method, concept.concept_id)
    if not done.empty:
        stale = set(done["delta_hash"]) - {dhash}
        if stale:
            raise DataError(
                f"{store.generation_part(method, concept.concept_id)} was generated with another "
                f"delta for concept {concept.concept_id}; use another output directory or "
                "method name"
            )
        keys = set(map(tuple, done[GENERATION_KEY].itertuples(index=False)))
        rows = rows[[k not in keys for k in rows[GENERATION_KEY].itertuples(index=False)]]
    profile = None
    if delta is not None and spec.needs_profile and len(rows):
        profile = _profile(
            model, tokenizer, store, method, concept, delta, all_rows, spec, settings
        )
    frames = [done] if not done.empty else []
    step = batch_size * chunk_batches
    for start in range(0, len(rows), step):
        todo = rows.iloc[start : start + step]
        seeds = [
            row_seed(settings.seed, concept.concept_id, int(r.input_id), float(r.factor))
            for r in todo.itertuples(index=False)
        ]
        made = _generate(model, tokenizer, todo, delta, seeds, settings, spec, profile, batch_size)
        new = todo.copy().reset_index(drop=True)
        new.insert(0, "method", method)
        for column in made.columns:
            new[column] = made[column].tolist()
        new["controller"] = spec.name if delta is not None else "none"
        new["delta_hash"] = dhash
        frames.append(new)
        store.write_generations(method, concept.concept_id, pd.concat(frames, ignore_index=True))
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def rate_concept(
    store: EvalStore,
    judge: Judge,
    method: str,
    concept_id: int,
    generations: pd.DataFrame,
    *,
    chunk: int = 64,
) -> pd.DataFrame:
    """Ratings of one concept's generations on all criteria (stored ones reused)."""
    done = store.ratings(judge.name, method, concept_id)
    hashes = {
        tuple(k[:-1]): k[-1] for k in generations[[*GENERATION_KEY, "text"]].itertuples(index=False)
    }
    if not done.empty:  # drop ratings of texts that changed since they were rated
        current = [
            hashes.get((r.concept_id, r.input_id, r.factor)) is not None
            and text_hash(hashes[(r.concept_id, r.input_id, r.factor)]) == r.text_hash
            for r in done.itertuples(index=False)
        ]
        done = done[current]
    rated = (
        set(map(tuple, done[[*GENERATION_KEY, "criterion"]].itertuples(index=False)))
        if (not done.empty)
        else set()
    )
    todo: list[tuple[Any, str]] = [
        (g, c)
        for g in generations.itertuples(index=False)
        for c in CRITERIA
        if (g.concept_id, g.input_id, g.factor, c) not in rated
    ]
    frames = [done] if not done.empty else []
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        requests = [RatingRequest(c, g.concept, g.instruction, g.text) for g, c in part]  # type: ignore[arg-type]
        scores = judge.rate_many(requests)
        frames.append(
            pd.DataFrame(
                {
                    "method": method,
                    "concept_id": [int(g.concept_id) for g, _ in part],
                    "input_id": [int(g.input_id) for g, _ in part],
                    "factor": [float(g.factor) for g, _ in part],
                    "criterion": [c for _, c in part],
                    "score": [int(s) for s, _ in scores],
                    "rationale": [str(r) for _, r in scores],
                    "judge": judge.name,
                    "text_hash": [text_hash(g.text) for g, _ in part],
                }
            )
        )
        store.write_ratings(judge.name, method, concept_id, pd.concat(frames, ignore_index=True))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def score_table(store: EvalStore, judge_name: str, prefix: str = "") -> pd.DataFrame:
    """One row per rated generation: keys, split, text and ``{prefix}*_score`` / ``{prefix}hm``."""
    gens = store.generations()
    ratings = store.ratings(judge_name)
    if gens.empty or ratings.empty:
        return pd.DataFrame()
    wide = ratings.pivot_table(
        index=["method", *GENERATION_KEY], columns="criterion", values="score", aggfunc="last"
    )
    wide = wide.reindex(columns=list(CRITERIA))
    wide.columns = [prefix + f"{c}_score" for c in wide.columns]
    wide = wide.reset_index()
    keep = ["method", *GENERATION_KEY, "concept", "split", "instruction", "text"]
    table = gens[keep].merge(wide, on=["method", *GENERATION_KEY], how="inner")
    table = table.dropna(subset=[prefix + c for c in SCORE_COLUMNS])
    table[prefix + "judge"] = judge_name
    return add_harmonic_mean(table, prefix)


@dataclass
class AxBenchReport:
    """The outcome for one judge: per-generation scores, per-concept selection, summary."""

    judge: str
    prefix: str
    scores: pd.DataFrame
    selected: pd.DataFrame
    summary: pd.DataFrame
    winrates: dict[str, float] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def format(self) -> str:
        lines = [f"judge: {self.judge}"]
        if self.prefix:
            lines.append("(proxy scores: not comparable with LLM-judge / AxBench numbers)")
        lines.append(self.summary.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
        for name, value in self.winrates.items():
            lines.append(f"winrate {name}: {value:.3f}")
        return "\n".join(lines)


def build_report(
    store: EvalStore, judge: Judge, baseline: str | None = None, write: bool = True
) -> AxBenchReport:
    """Select factors and summarise what is stored for ``judge``; write the tables."""
    prefix = judge.column_prefix
    scores = score_table(store, judge.name, prefix)
    selected = select_factors(scores, prefix) if not scores.empty else pd.DataFrame()
    summary = summarize(selected, prefix) if not selected.empty else pd.DataFrame()
    rates: dict[str, float] = {}
    if baseline is not None and not selected.empty:
        for method in sorted(set(selected["method"]) - {baseline}):
            if baseline in set(selected["method"]):
                rates[f"{method} vs {baseline}"] = winrate(selected, method, baseline, prefix)
    report = AxBenchReport(judge.name, prefix, scores, selected, summary, rates)
    if write and not scores.empty:
        tag = slug(judge.name)
        files = {
            "scores": store.root / f"scores_{tag}.parquet",
            "selected": store.root / f"selected_{tag}.parquet",
            "summary": store.root / f"summary_{tag}.json",
        }
        write_parquet_atomic(files["scores"], scores)
        write_parquet_atomic(files["selected"], selected)
        ratings = store.ratings(judge.name)
        unparsed = (
            None
            if not isinstance(judge, PromptJudge) or ratings.empty
            else int(sum(parse_rating(str(r)) is None for r in ratings["rationale"]))
        )
        payload = {
            "judge": judge.provenance(),
            "ratings": len(ratings),
            "unparsed_ratings": unparsed,  # stored LLM answers without a valid rating (score 0)
            "parse_failures_this_session": judge.parse_failures,
            "summary": json.loads(summary.to_json(orient="records")),
            "winrates": rates,
        }
        write_text_atomic(files["summary"], json.dumps(payload, indent=2) + "\n")
        report.files = files
    return report


def run_axbench(
    model: Any,
    tokenizer: Any,
    concepts: Sequence[Concept],
    deltas: Mapping[int, Delta | None],
    judge: Judge | None,
    out_dir: str | Path,
    *,
    instructions: pd.DataFrame | Sequence[str],
    factors: Sequence[float] | None = None,
    settings: AxBenchSettings | None = None,
    method: str = "steered",
    baseline: str | None = None,
    batch_size: int = 16,
    progress: bool = True,
    controller: ControlSpec | None = None,
) -> AxBenchReport | None:
    """Generate and rate every concept in ``deltas`` (keyed by concept id), then report.

    Without a judge only generations are made (rate later with :func:`rescore`). Under a
    ``controller`` other than ``fixed``, ``factors`` are its KL budgets (default
    :data:`~unisteer.evaluate.axbench.protocol.KAPPA_FACTORS`) and an ``m_max`` left unset
    is each delta's recorded grid end.
    """
    settings = settings or AxBenchSettings()
    spec = controller or ControlSpec()
    if factors is not None:
        factors = spec.check_settings(factors, "factors")
    store = EvalStore(out_dir)
    stored = settings.to_dict()
    if spec.name != "fixed":
        stored["controller"] = spec.describe()
    _check_settings(store, method, stored)
    by_id = {c.concept_id: c for c in concepts}
    missing = sorted(set(deltas) - set(by_id))
    if missing:
        raise DataError(f"deltas given for unknown concept ids {missing}")
    specs = {cid: _concept_spec(spec, d, cid) for cid, d in deltas.items()}
    store.update_run(methods={method: {"generation": stored}})
    bar = tqdm(sorted(deltas), desc=f"axbench ({method})", unit="concept", disable=not progress)
    for cid in bar:
        delta = deltas[cid]
        if factors is not None:
            grid = list(factors)
        elif spec.name != "fixed" and delta is not None:
            grid = list(KAPPA_FACTORS)
        else:
            grid = list(default_factors(delta.kind if delta is not None else None))
        bar.set_postfix_str(f"concept {cid}: generating {len(grid)} factors")
        gens = generate_concept(
            model,
            tokenizer,
            store,
            method,
            by_id[cid],
            delta,
            grid,
            instructions,
            settings,
            batch_size=batch_size,
            controller=specs[cid],
        )
        if judge is not None and not gens.empty:
            bar.set_postfix_str(f"concept {cid}: rating")
            rate_concept(store, judge, method, cid, gens)
    bar.close()
    if judge is None:
        return None
    store.update_run(judges={judge.name: judge.provenance()})
    return build_report(store, judge, baseline)


def _concept_spec(spec: ControlSpec, delta: Delta | None, concept_id: int) -> ControlSpec:
    """``spec`` with ``m_max`` from the delta's recorded grid where it was left unset."""
    if delta is None:
        return spec
    try:
        return spec.for_delta(delta)
    except ValueError as e:
        raise DataError(f"concept {concept_id}: {e}") from None


def rescore(
    out_dir: str | Path,
    judge: Judge,
    *,
    methods: Sequence[str] | None = None,
    baseline: str | None = None,
    progress: bool = True,
) -> AxBenchReport:
    """Rate stored generations with ``judge`` (never generating anything), then report."""
    store = EvalStore(out_dir)
    gens = store.generations()
    if gens.empty:
        raise DataError(f"{store.root} holds no generations to rate")
    if methods is not None:
        gens = gens[gens["method"].isin(list(methods))]
    groups = list(gens.groupby(["method", "concept_id"], sort=True))
    for (method, cid), g in tqdm(groups, desc=f"rating ({judge.name})", disable=not progress):
        rate_concept(store, judge, str(method), int(cid), g)
    store.update_run(judges={judge.name: judge.provenance()})
    return build_report(store, judge, baseline)
