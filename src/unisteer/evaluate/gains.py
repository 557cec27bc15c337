"""What steering at one m measurably did to held-out pairs, with bootstrap intervals over pairs.

Per pair i, the PrefOdds gain g_i = PrefOdds_i(m) - PrefOdds_i(0) and the UtilOdds drop
u_i = UtilOdds_i(0) - UtilOdds_i(m) (arXiv 2602.02343, Eq. 5-6; UtilOdds only where it is
defined at both m). The reported gain and drop are their means, and the interval is the
percentile bootstrap of that mean over pairs (resampled with replacement, seeded).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

BOOTSTRAP_RESAMPLES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Gains:
    """Mean PrefOdds gain and UtilOdds drop from m = 0, with their bootstrap intervals."""

    pref_gain: float
    pref_gain_ci: tuple[float, float]
    util_drop: float | None  # None: no pair has UtilOdds defined at both m
    util_drop_ci: tuple[float, float] | None
    n_pairs: int
    n_out_of_domain: int  # pairs left out of the utility numbers


def mean_interval(
    values: np.ndarray, *, n: int = BOOTSTRAP_RESAMPLES, level: float = LEVEL, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaN, NaN for fewer than 2)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng([seed, 0x6A1])
    means = x[rng.integers(0, x.size, size=(n, x.size))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def nested_interval(
    groups: list[np.ndarray], *, n: int = BOOTSTRAP_RESAMPLES, level: float = LEVEL, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the mean over two levels (seeds, then pairs within a seed): each
    resample draws the groups with replacement, then each drawn group's values with
    replacement, and averages the group means. Wider than a one-level bootstrap when the
    groups (training runs) differ. NaN, NaN for fewer than 2 groups."""
    xs = [np.asarray(g, dtype=np.float64) for g in groups if len(g)]
    if len(xs) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng([seed, 0x6A2])
    means = np.empty(n)
    for k in range(n):
        picked = rng.integers(0, len(xs), size=len(xs))
        means[k] = np.mean(
            [xs[j][rng.integers(0, xs[j].size, size=xs[j].size)].mean() for j in picked]
        )
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def pair_gains(base: pd.DataFrame, at: pd.DataFrame) -> pd.DataFrame:
    """Per pair: ``pref_gain`` = PrefOdds(m) - PrefOdds(0), ``util_drop`` = UtilOdds(0) -
    UtilOdds(m) and ``util_in_domain`` (UtilOdds defined at both), matched by ``pair_id``;
    ``base`` (m = 0) and ``at`` (one m) are sweep tables."""
    cols = ["pair_id", "pref_odds", "util_odds", "util_in_domain"]
    both = base[cols].merge(at[cols], on="pair_id", suffixes=("_0", "_m"), validate="1:1")
    if both.empty:
        raise ValueError("no pair is scored at both m = 0 and the chosen m")
    return pd.DataFrame(
        {
            "pair_id": both["pair_id"],
            "pref_gain": (both["pref_odds_m"] - both["pref_odds_0"]).astype(np.float64),
            "util_drop": (both["util_odds_0"] - both["util_odds_m"]).astype(np.float64),
            "util_in_domain": both["util_in_domain_0"] & both["util_in_domain_m"],
        }
    )


def measured_gains(base: pd.DataFrame, at: pd.DataFrame, *, seed: int = 0) -> Gains:
    """Gains of the rows ``at`` (one m) over ``base`` (m = 0), matched by ``pair_id``; both
    are sweep tables (``pair_id``, ``pref_odds``, ``util_odds``, ``util_in_domain``)."""
    per = pair_gains(base, at)
    gain = per["pref_gain"].to_numpy()
    ok = per["util_in_domain"].to_numpy(dtype=bool)
    drop = per["util_drop"].to_numpy()[ok]
    return Gains(
        pref_gain=float(gain.mean()),
        pref_gain_ci=mean_interval(gain, seed=seed),
        util_drop=float(drop.mean()) if drop.size else None,
        util_drop_ci=mean_interval(drop, seed=seed) if drop.size else None,
        n_pairs=len(per),
        n_out_of_domain=int((~ok).sum()),
    )
