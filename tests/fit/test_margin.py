"""The budget margin (unisteer.fit.margin): its numbers against a hand computation, the point
rule exactly at level 0.5, and a choice and a refinement that keep the bound."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import t as student_t

from unisteer.fit import choose_multiplier, fit_sweep
from unisteer.fit.margin import check_level, drop_margin
from unisteer.fit.refine import refinement_points
from unisteer.fit.synthetic import synthetic_table
from unisteer.scoring.table import summarize_sweep

from test_derive import sweep_fit
from test_refine import PREF, UTIL


def table_of(util: dict[str, list[float]], ms: list[float]) -> pd.DataFrame:
    """A sweep table whose only meaningful column is util_odds (per pair, per m)."""
    rows = [
        {"pair_id": pid, "m": m, "util_odds": u, "pref_odds": 0.0, "util_in_domain": True}
        for pid, values in util.items()
        for m, u in zip(ms, values, strict=True)
    ]
    return pd.DataFrame(rows)


MS = [-1.0, 0.0, 1.0, 2.0]
UTIL_BY_PAIR = {
    "a": [1.0, 2.0, 1.0, -1.0],
    "b": [2.0, 3.0, 1.5, 0.0],
    "c": [0.0, 2.5, 2.0, -3.0],
}


def test_margin_is_t_times_the_standard_error_of_the_per_pair_drop() -> None:
    margin = drop_margin(table_of(UTIL_BY_PAIR, MS), 0.9)
    values = np.array(list(UTIL_BY_PAIR.values()))
    drops = values[:, [1]] - values  # u_i(0) - u_i(m)
    t = student_t.ppf(0.9, 2)
    want = [t * np.std(drops[:, j], ddof=1) / math.sqrt(3) for j in range(len(MS))]
    assert list(margin.m) == MS
    assert margin.margin == pytest.approx(want, rel=1e-12)
    assert margin.margin[1] == 0.0 and list(margin.n_pairs) == [3, 3, 3, 3]
    # linear between swept multipliers, the edge value beyond
    assert float(margin(0.5)) == pytest.approx((want[1] + want[2]) / 2, rel=1e-12)
    assert float(margin(5.0)) == pytest.approx(want[3], rel=1e-12)
    assert float(margin(-4.0)) == pytest.approx(want[0], rel=1e-12)


def test_out_of_domain_points_are_left_out_and_a_single_pair_has_no_bound() -> None:
    table = table_of(UTIL_BY_PAIR, MS)
    out = (table["pair_id"] != "a") & (table["m"] == 2.0)
    table.loc[out, "util_in_domain"] = False
    table.loc[out, "util_odds"] = np.nan
    margin = drop_margin(table, 0.95)
    assert list(margin.n_pairs) == [3, 3, 3, 1]
    assert math.isinf(margin.margin[3])
    assert math.isinf(float(margin(1.5))) and math.isfinite(float(margin(0.9)))
    fit = sweep_fit()
    c = choose_multiplier(fit, 3.0, margin=margin)  # m > 1 is not allowed any more
    assert c.m <= 1.0 + 1e-9


def test_level_one_half_is_the_point_rule_exactly() -> None:
    table = synthetic_table(
        np.linspace(-3, 3, 13), PREF, UTIL, n_pairs=6, pair_spread=1.0, noise=0.2
    )
    fit = fit_sweep(table)
    margin = drop_margin(table, 0.5)
    assert margin.zero and not np.any(margin.margin)
    assert choose_multiplier(fit, 1.0, margin=margin) == choose_multiplier(fit, 1.0)
    assert choose_multiplier(fit, 1.0).util_drop_bound == choose_multiplier(fit, 1.0).util_drop


def test_a_margin_keeps_the_bound_within_the_budget_at_a_smaller_m() -> None:
    table = synthetic_table(
        np.linspace(-3, 3, 13), PREF, UTIL, n_pairs=8, pair_spread=0.5, noise=0.3, seed=3
    )
    fit = fit_sweep(table)
    point = choose_multiplier(fit, 1.0)
    margin = drop_margin(table, 0.9)
    safe = choose_multiplier(fit, 1.0, margin=margin)
    assert safe.budget_level == 0.9 and point.budget_level == 0.5
    assert abs(safe.m) < abs(point.m) and np.sign(safe.m) == np.sign(point.m)
    assert safe.util_drop < point.util_drop
    assert safe.util_drop_bound == pytest.approx(safe.util_drop + float(margin(safe.m)))
    assert safe.util_drop_bound <= 1.0 + 1e-9 and safe.constraint_active


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(-50, 50, allow_nan=False), min_size=4, max_size=4),
        min_size=2,
        max_size=8,
    ),
    st.floats(0.5, 0.99),
    st.floats(0.5, 0.99),
)
def test_the_margin_grows_with_the_level(values: list[list[float]], a: float, b: float) -> None:
    table = table_of({f"p{i}": v for i, v in enumerate(values)}, MS)
    lo, hi = sorted((a, b))
    small, large = drop_margin(table, lo), drop_margin(table, hi)
    assert np.all(small.margin >= 0)
    assert np.all(large.margin >= small.margin - 1e-12)


@pytest.mark.parametrize("level", [0.4, 1.0, 1.5, float("nan"), "high"])
def test_a_bad_level_is_refused_with_the_allowed_range(level: object) -> None:
    with pytest.raises(ValueError, match=r"budget_level must be a one-sided confidence in \[0.5"):
        check_level(level)  # type: ignore[arg-type]


def test_refinement_reads_the_measured_drop_with_the_margin() -> None:
    """At m = 1 the mean drop (0.89) is within the 1-nat budget but its 95% bound (1.18) is
    not, so with the margin the bracket refined is (0.5, 1], without it (1, 1.5]."""
    ms = [float(x) for x in np.linspace(-3, 3, 13)]
    table = synthetic_table(ms, PREF, UTIL, n_pairs=8, pair_spread=0.5, noise=0.3, seed=3)
    fit = fit_sweep(table)
    means = summarize_sweep(table)
    margin = drop_margin(table, 0.95)
    at_one = means["m"] == 1.0
    drop = float(means.loc[means["m"] == 0.0, "util_odds"].iloc[0]) - means["util_odds"]
    assert float(drop[at_one].iloc[0]) < 1.0 < float(drop[at_one].iloc[0]) + float(margin(1.0))

    def budget_points(margin_: object) -> list[float]:
        points = refinement_points(
            fit, means["m"], means["util_odds"], max_util_drop=1.0, tol=0.01, margin=margin_
        )  # type: ignore[arg-type]
        return [p.m for p in points if p.m > 0 and "budget" in p.reason]

    (with_margin,) = budget_points(margin)
    (without,) = budget_points(None)
    assert 0.5 < with_margin < 1.0 < without < 1.5
