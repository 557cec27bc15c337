"""A confidence margin on the utility budget: choose m so that the budget holds for the mean
over pairs like the swept ones, not only for the swept pairs' own mean.

The choice of m (:func:`~unisteer.fit.derive.choose_multiplier`, paper §4) keeps the fitted
mean UtilOdds drop of the swept pairs within the budget δ. That mean is an estimate: on other
pairs from the same source the drop at the same m is larger about half of the time. (The
default experiment at commit b52c4c9: the train fit's drop 1.00 at m = 0.87, the held-out
pairs' 1.68, 95% CI [0.72, 2.60]; ``docs/results.md``.)

With a one-sided ``level`` above 0.5 the choice keeps instead::

    fitted drop(m) + t_level(n - 1) · se(m) ≤ δ

where se(m) is the standard error over pairs of the per-pair drop
UtilOdds_i(0) - UtilOdds_i(m), measured at every swept m (in-domain points of pairs that are
in domain at m = 0 too), interpolated linearly between swept multipliers (se(0) = 0 exactly;
beyond the swept range the edge value), and t_level(n - 1) is the one-sided Student-t quantile
for the n pairs measured at that m. It is the usual one-sided upper confidence bound of a mean,
evaluated where the fit says the mean is: "the mean drop over the source's pairs is within δ
with confidence ``level``". ``level = 0.5`` gives a zero margin, i.e. the paper's rule
exactly. A multiplier measured on fewer than two pairs gets an infinite margin (no bound).

Pure numpy/scipy/pandas (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.stats import t as student_t

from unisteer.fit.curves import Array
from unisteer.fit.data import usable_rows

#: The paper's rule: the fitted mean drop itself within the budget (no margin).
POINT_LEVEL = 0.5


def check_level(level: float) -> float:
    """``level`` as a float, or ValueError unless 0.5 ≤ level < 1."""
    if not (isinstance(level, int | float) and POINT_LEVEL <= float(level) < 1.0):
        raise ValueError(
            f"budget_level must be a one-sided confidence in [0.5, 1) (0.5: no margin, the "
            f"fitted drop itself), got {level!r}"
        )
    return float(level)


@dataclass(frozen=True, eq=False)
class DropMargin:
    """t·se of the mean utility drop at the swept multipliers ``m`` (sorted, with 0)."""

    m: Array
    margin: Array
    n_pairs: npt.NDArray[np.int64]
    level: float

    def __call__(self, x: npt.ArrayLike) -> Array:
        """The margin at ``x``: linear between swept multipliers, the edge value beyond."""
        xs = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(self.margin)):
            # np.interp mixes inf into neighbours as nan; keep inf where an end point is inf
            lo = np.searchsorted(self.m, xs, side="right") - 1
            hi = np.clip(lo + 1, 0, self.m.size - 1)
            lo = np.clip(lo, 0, self.m.size - 1)
            both = np.maximum(self.margin[lo], self.margin[hi])
            exact = np.interp(xs, self.m, np.where(np.isfinite(self.margin), self.margin, 0.0))
            return np.where(np.isfinite(both), exact, np.inf)
        return np.interp(xs, self.m, self.margin)

    @property
    def zero(self) -> bool:
        """True when the margin is zero everywhere (``level = 0.5``)."""
        return self.level == POINT_LEVEL


def drop_margin(table: pd.DataFrame, level: float = POINT_LEVEL) -> DropMargin:
    """The margin of the module docstring from a sweep table (one row per pair and m, with
    ``pair_id, m, util_odds`` and optionally ``util_in_domain``)."""
    level = check_level(level)
    rows = usable_rows(table, "utility", "utility budget margin")
    if "pair_id" not in rows.columns:
        raise ValueError("a budget margin needs a sweep table with a pair_id column")
    wide = rows.pivot_table(index="pair_id", columns="m", values="y", aggfunc="mean")
    ms = np.asarray(wide.columns, dtype=np.float64)
    if 0.0 not in ms:
        raise ValueError("a budget margin needs the sweep to hold m = 0 (the budget is from there)")
    values = wide.to_numpy(dtype=np.float64)
    drops = values[:, ms == 0.0] - values  # per pair and m; NaN where either is missing
    n = np.sum(np.isfinite(drops), axis=0).astype(np.int64)
    margin = np.zeros(ms.size)
    if level > POINT_LEVEL:
        for j in range(ms.size):
            if ms[j] == 0.0:
                continue
            if n[j] < 2:
                margin[j] = np.inf
                continue
            se = float(np.nanstd(drops[:, j], ddof=1)) / np.sqrt(n[j])
            margin[j] = float(student_t.ppf(level, n[j] - 1)) * se
    return DropMargin(ms, margin, n, level)


def margin_for(table: pd.DataFrame, level: float) -> DropMargin | None:
    """:func:`drop_margin` of ``table`` at ``level``, or ``None`` at the point rule (0.5), where
    the margin is zero and the choice needs none."""
    return drop_margin(table, level) if check_level(level) > POINT_LEVEL else None
