"""Accuracy on polarity pairs (e.g. Yes/No persona data such as psychopathy).

A pair counts as correct when the (steered) model prefers the positive answer:
``P(A_p | q) > P(A_n | q)``, i.e. ``PrefOdds = L_n − L_p > 0`` with summed completion NLLs.
Ties count as wrong. Computed with :func:`unisteer.scoring.sweep` (one pass for many m).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from unisteer.core.delta import Delta
from unisteer.data.pairs import PolarityPair
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


def pair_accuracy(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PolarityPair],
    delta: Delta | None = None,
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
    delta: Delta | None,
    ms: Sequence[float],
    *,
    progress: bool = False,
    **kwargs: Any,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Accuracy at every m of ``ms``: ``(per-m summary, per-pair table)``.

    The summary has ``m, accuracy, n, pref_odds`` (the mean PrefOdds).
    """
    if not pairs:
        raise ValueError("no pairs to score")
    result = sweep(model, tokenizer, pairs, delta, list(ms), progress=progress, **kwargs)
    table = _with_preference(result.table)
    summary = (
        table.groupby("m", sort=True)
        .agg(
            accuracy=("prefers_positive", "mean"),
            n=("prefers_positive", "size"),
            pref_odds=("pref_odds", "mean"),
        )
        .reset_index()
    )
    return summary, table
