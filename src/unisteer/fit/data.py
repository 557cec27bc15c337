"""From a sweep table (or plain arrays) to checked (m, y) points.

A sweep table (:func:`unisteer.scoring.sweep`) has one row per pair and multiplier with columns
``pair_id, m, pref_odds, util_odds, util_in_domain`` (and losses and token counts, unused here).

* The **mean curve** is the mean over pairs at each m. For utility only in-domain points count
  (rows with ``util_in_domain`` False are dropped first; their UtilOdds is NaN by design).
* A **pair curve** is one pair's own points.

Every curve is checked before fitting (:func:`check_points`). A :class:`FitError` says what is
wrong and what to do when there are NaNs or infinities (other than out-of-domain utility), fewer
than :data:`MIN_DISTINCT_M` distinct multipliers, multipliers of only one sign, or a flat curve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from unisteer.fit.curves import Array, Kind
from unisteer.fit.errors import FitError

MIN_DISTINCT_M = 7
COLUMNS: dict[Kind, str] = {"preference": "pref_odds", "utility": "util_odds"}


@dataclass(frozen=True, eq=False)
class CurvePoints:
    """Checked points of one curve: multipliers, values, and per-m standard errors if known."""

    kind: Kind
    m: Array
    y: Array
    sem: Array | None = None
    n_pairs: int | None = None
    label: str = "curve"


def check_points(m: Array, y: Array, *, kind: Kind, label: str) -> None:
    """Raise :class:`FitError` unless (m, y) can be fitted by the two-sided model."""
    name = COLUMNS[kind]
    if m.shape != y.shape or m.ndim != 1:
        raise FitError(
            f"{label}: m and {name} must be 1-d arrays of the same length, got shapes "
            f"{m.shape} and {y.shape}"
        )
    bad_m = ~np.isfinite(m)
    if bad_m.any():
        raise FitError(
            f"{label}: {int(bad_m.sum())} multiplier value(s) are NaN or infinite; drop those rows "
            "or re-run the sweep"
        )
    bad_y = ~np.isfinite(y)
    if bad_y.any():
        where = ", ".join(f"{v:g}" for v in np.unique(m[bad_y])[:5])
        hint = (
            "mark out-of-domain points with util_in_domain=False (they are then skipped) or "
            "drop them"
            if kind == "utility"
            else "drop those rows or re-run the sweep"
        )
        raise FitError(
            f"{label}: {int(bad_y.sum())} {name} value(s) are NaN or infinite (at m = {where}); "
            f"{hint}"
        )
    distinct = np.unique(m)
    if distinct.size < MIN_DISTINCT_M:
        raise FitError(
            f"{label}: only {distinct.size} distinct multiplier(s) with usable {name} "
            f"(need at least {MIN_DISTINCT_M}: the model has up to 9 parameters); sweep a finer "
            "grid of m, e.g. the default 21 points"
        )
    if not ((distinct < 0).any() and (distinct > 0).any()):
        sign = "non-negative" if (distinct >= 0).all() else "non-positive"
        raise FitError(
            f"{label}: every multiplier is {sign} (m from {distinct[0]:g} to {distinct[-1]:g}); "
            "the two-sided decay needs m of both signs: sweep a grid symmetric around 0"
        )
    scale = max(1.0, float(np.max(np.abs(y))))
    if float(np.ptp(y)) <= 1e-12 * scale:
        raise FitError(
            f"{label}: {name} is flat (the same value {y[0]:g} at every m), so there is nothing "
            "to fit and R² is undefined; check that the delta changes the model (non-zero "
            "parameters, the right site) and that the m grid is wide enough"
        )


def _require(table: pd.DataFrame, columns: list[str], label: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise FitError(
            f"{label}: the table lacks column(s) {', '.join(missing)}; expected a sweep table "
            "with columns pair_id, m, pref_odds, util_odds, util_in_domain "
            "(unisteer.scoring.sweep / sweep.parquet)"
        )


def usable_rows(table: pd.DataFrame, kind: Kind, label: str) -> pd.DataFrame:
    """The rows of ``table`` that take part in a ``kind`` fit, as columns (pair_id?, m, y).

    For utility, rows with ``util_in_domain`` False are dropped. A NaN left afterwards is kept,
    so that :func:`check_points` reports it.
    """
    col = COLUMNS[kind]
    _require(table, ["m", col], label)
    if kind == "utility" and "util_in_domain" in table.columns:
        table = table[table["util_in_domain"].astype(bool)]
    keep = ["m", col] + (["pair_id"] if "pair_id" in table.columns else [])
    out = table[keep].rename(columns={col: "y"})
    out = out.astype({"m": np.float64, "y": np.float64})
    return out


def _sem(values: pd.Series) -> float:
    n = int(values.count())
    return float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")


def mean_points(table: pd.DataFrame, kind: Kind, *, label: str | None = None) -> CurvePoints:
    """The mean curve over pairs (utility: over in-domain points), checked."""
    label = label or f"{kind} mean curve"
    rows = usable_rows(table, kind, label)
    if rows["m"].isna().any():
        check_points(rows["m"].to_numpy(), rows["y"].to_numpy(), kind=kind, label=label)
    grouped = rows.groupby("m", sort=True)["y"]
    m = np.asarray(grouped.mean().index, dtype=np.float64)
    # a NaN y inside a group must not be averaged away: count it as NaN for the whole m
    y = np.asarray(grouped.apply(lambda s: s.mean() if s.notna().all() else np.nan), np.float64)
    sem = np.asarray(grouped.apply(_sem), dtype=np.float64)
    check_points(m, y, kind=kind, label=label)
    n_pairs = int(rows["pair_id"].nunique()) if "pair_id" in rows.columns else None
    return CurvePoints(kind, m, y, sem, n_pairs, label)


def array_points(
    m: npt.ArrayLike, y: npt.ArrayLike, kind: Kind, *, label: str | None = None
) -> CurvePoints:
    """Plain arrays, used as given (no averaging), checked."""
    label = label or f"{kind} curve"
    mm = np.asarray(m, dtype=np.float64).ravel()
    yy = np.asarray(y, dtype=np.float64).ravel()
    check_points(mm, yy, kind=kind, label=label)
    return CurvePoints(kind, mm, yy, None, None, label)


def points(data: pd.DataFrame | npt.ArrayLike, y: npt.ArrayLike | None, kind: Kind) -> CurvePoints:
    """A table → its mean curve; arrays ``(m, y)`` → those points."""
    if isinstance(data, pd.DataFrame):
        if y is not None:
            raise TypeError("give either a sweep table or arrays (m, y), not a table and y")
        return mean_points(data, kind)
    if y is None:
        raise TypeError(f"fitting arrays needs both m and y (the {COLUMNS[kind]} values)")
    return array_points(data, y, kind)


def pair_points(table: pd.DataFrame, kind: Kind) -> dict[str, pd.DataFrame]:
    """Per pair id, that pair's usable rows (unchecked; the caller checks each)."""
    label = f"{kind} per-pair curves"
    _require(table, ["pair_id"], label)
    rows = usable_rows(table, kind, label)
    return {str(pid): g for pid, g in rows.groupby("pair_id", sort=True)}


@dataclass(frozen=True, eq=False)
class PairMatrix:
    """Values as a (pairs × m) matrix, NaN where a pair has no usable point at that m."""

    pair_ids: tuple[str, ...]
    m: Array
    values: Array

    def mean_of(self, rows: npt.NDArray[np.intp]) -> tuple[Array, Array]:
        """Mean curve over the given rows (repeats allowed); m with no usable point dropped."""
        sub = self.values[rows]
        present = np.isfinite(sub)
        count = present.sum(axis=0)
        total = np.where(present, sub, 0.0).sum(axis=0)
        keep = count > 0
        return self.m[keep], total[keep] / count[keep]


def pair_matrix(table: pd.DataFrame, kind: Kind) -> PairMatrix:
    """The (pairs × m) matrix used by the bootstrap over pairs."""
    label = f"{kind} bootstrap over pairs"
    _require(table, ["pair_id"], label)
    rows = usable_rows(table, kind, label)
    wide = rows.pivot_table(index="pair_id", columns="m", values="y", aggfunc="mean", dropna=False)
    return PairMatrix(
        tuple(str(i) for i in wide.index),
        np.asarray(wide.columns, dtype=np.float64),
        np.asarray(wide.to_numpy(), dtype=np.float64),
    )
