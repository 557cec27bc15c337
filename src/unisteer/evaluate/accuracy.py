"""Accuracy on polarity pairs (e.g. Yes/No persona data such as psychopathy).

A pair counts as correct when the (steered) model prefers the positive answer:
``P(A_p | q) > P(A_n | q)``, i.e. ``PrefOdds = L_n − L_p > 0`` with summed completion NLLs.
Ties count as wrong. Computed with :func:`unisteer.scoring.sweep` (one pass for many m).

:func:`eval_accuracy` is what ``unisteer eval accuracy`` calls: several deltas, results written
into a directory atomically (with tqdm progress), stored (delta, m) results reused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from unisteer.control.score import sweep_controller
from unisteer.control.spec import ControlSpec
from unisteer.core.steering_set import Steerable
from unisteer.data.pairs import PolarityPair
from unisteer.errors import DataError
from unisteer.evaluate.axbench.store import DeltaSource, as_delta, slug
from unisteer.files import write_parquet_atomic, write_text_atomic
from unisteer.scoring.sweep import score_pairs, sweep


@dataclass(frozen=True)
class AccuracyResult:
    """Accuracy at one multiplier, with the per-pair table (``prefers_positive`` column)."""

    m: float
    accuracy: float
    n: int
    table: pd.DataFrame


def _with_preference(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    out["prefers_positive"] = out["pref_odds"] > 0
    return out


def _summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per m: ``accuracy`` (fraction preferring A_p), ``n`` and the mean ``pref_odds``."""
    return (
        table.groupby("m", sort=True)
        .agg(
            accuracy=("prefers_positive", "mean"),
            n=("prefers_positive", "size"),
            pref_odds=("pref_odds", "mean"),
        )
        .reset_index()
    )


def pair_accuracy(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PolarityPair],
    delta: Steerable | None = None,
    m: float = 0.0,
    **kwargs: Any,
) -> AccuracyResult:
    """The fraction of pairs where the model steered by ``delta`` at ``m`` prefers A_p.

    ``kwargs`` go to :func:`unisteer.scoring.score_pairs` (e.g. ``positions``,
    ``include_suffix``). Without a delta, ``m`` must be 0.
    """
    if not pairs:
        raise ValueError("no pairs to score")
    table = _with_preference(score_pairs(model, tokenizer, pairs, delta, m, **kwargs))
    return AccuracyResult(float(m), float(table["prefers_positive"].mean()), len(table), table)


def accuracy_by_m(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PolarityPair],
    delta: Steerable | None,
    ms: Sequence[float],
    *,
    progress: bool = False,
    controller: ControlSpec | None = None,
    **kwargs: Any,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Accuracy at every m of ``ms``: ``(per-m summary, per-pair table)``.

    The summary has ``m, accuracy, n, pref_odds`` (the mean PrefOdds). Under a ``controller``
    other than ``fixed`` (:class:`unisteer.control.spec.ControlSpec`), ``ms`` are its KL
    budgets and the ``m`` column holds them (with ``mean_m``, the mean ``m_t`` per pair).
    """
    if not pairs:
        raise ValueError("no pairs to score")
    if controller is not None and controller.name != "fixed":
        if delta is None:
            raise ValueError("a controller needs a delta to steer with")
        if kwargs.get("reduction", "sum") != "sum":
            raise ValueError("scoring under a controller sums the completion NLL (reduction 'sum')")
        kw = {k: kwargs[k] for k in ("positions", "include_suffix") if k in kwargs}
        scored = sweep_controller(model, tokenizer, pairs, delta, controller, list(ms),
                                  progress=progress, **kw)  # fmt: skip
        table = _with_preference(scored.rename(columns={controller.setting: "m"}))
        return _summary(table), table
    result = sweep(model, tokenizer, pairs, delta, list(ms), progress=progress, **kwargs)
    table = _with_preference(result.table)
    return _summary(table), table


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
    controller: ControlSpec | None = None,
    **score_kwargs: Any,
) -> pd.DataFrame:
    """Accuracy (the model prefers A_p) of each delta at each m; a ``None`` delta is the base
    model, scored at m = 0 only.

    Writes ``accuracy/<name>.parquet`` (per pair and m), ``accuracy.parquet`` and
    ``accuracy.json`` (per delta and m: accuracy, n, mean PrefOdds). Stored (delta, m) results
    for the same pairs are reused. Under a ``controller`` other than ``fixed``, ``ms`` are its
    KL budgets: the parts are ``accuracy/<name>.<controller>.parquet`` and the written tables
    have ``kappa`` in ``m``'s place (the base model is still scored at m = 0).
    """
    out = Path(out_dir)
    data_hash = _pairs_hash(pairs)
    adaptive = controller is not None and controller.name != "fixed"
    tag = json.dumps(controller.describe(), sort_keys=True) if adaptive and controller else "fixed"
    summaries = []
    for name, source in tqdm(deltas.items(), desc="accuracy", disable=not progress):
        grid = [0.0] if source is None else [float(m) for m in ms]
        suffix = f".{controller.name}" if adaptive and controller and source is not None else ""
        part = out / "accuracy" / f"{slug(name)}{suffix}.parquet"
        stored = pd.read_parquet(part) if part.is_file() else pd.DataFrame()
        if not stored.empty and set(stored["data_hash"]) != {data_hash}:
            raise DataError(f"{part} was computed on other pairs; use another output directory")
        if suffix and not stored.empty and set(stored["controller"]) != {tag}:
            raise DataError(
                f"{part} was computed with another controller "
                f"({stored['controller'].iloc[0]}); use another output directory"
            )
        have = set(stored["m"].astype(float)) if not stored.empty else set()
        todo = [m for m in grid if m not in have]
        if todo:
            delta = None if source is None else as_delta(source, model, tokenizer)
            try:
                spec = controller.for_delta(delta) if suffix and controller else None
            except ValueError as e:
                raise DataError(f"delta {name!r}: {e}") from None
            _, table = accuracy_by_m(
                model, tokenizer, pairs, delta, todo, progress=progress,
                controller=spec, **score_kwargs,
            )  # fmt: skip
            table.insert(0, "delta", name)
            table["data_hash"] = data_hash
            if suffix:
                table["controller"] = tag
            stored = pd.concat([stored, table], ignore_index=True) if not stored.empty else table
            write_parquet_atomic(part, stored)
        rows = stored[stored["m"].isin(grid)]
        summary = _summary(rows)
        summary.insert(0, "delta", name)
        summaries.append(summary)
    result = pd.concat(summaries, ignore_index=True) if summaries else pd.DataFrame()
    if adaptive:
        result = result.rename(columns={"m": "kappa"})
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
