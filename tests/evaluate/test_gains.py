"""Measured gains at one m: paired means over pairs and their bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unisteer.evaluate.gains import mean_interval, measured_gains, nested_interval, pair_gains


def table(pref: list[float], util: list[float], ok: list[bool] | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "pair_id": [f"p{i}" for i in range(len(pref))],
            "pref_odds": pref,
            "util_odds": util,
            "util_in_domain": ok if ok is not None else [True] * len(pref),
        }
    )


def test_gains_are_paired_means_and_out_of_domain_pairs_leave_the_utility() -> None:
    base = table([-1.0, -2.0, 0.0], [1.0, 2.0, 3.0])
    at = table([1.0, 0.0, 4.0], [0.5, 1.0, float("nan")], [True, True, False])
    g = measured_gains(base, at.iloc[::-1])  # matched by pair id, not by row order
    assert g.pref_gain == pytest.approx((2 + 2 + 4) / 3)
    assert g.util_drop == pytest.approx((0.5 + 1.0) / 2)
    assert g.n_out_of_domain == 1 and g.n_pairs == 3
    lo, hi = g.pref_gain_ci
    assert 2.0 <= lo <= g.pref_gain <= hi <= 4.0


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-50, 50), min_size=2, max_size=40), st.integers(0, 3))
def test_the_interval_lies_within_the_values_and_is_seeded(values: list[float], seed: int) -> None:
    x = np.array(values)
    lo, hi = mean_interval(x, seed=seed)
    assert x.min() - 1e-9 <= lo <= hi <= x.max() + 1e-9
    assert mean_interval(x, seed=seed) == (lo, hi)  # seeded


def test_one_value_has_no_interval() -> None:
    assert all(np.isnan(mean_interval(np.array([1.0]))))


def test_pair_gains_are_the_rows_behind_the_means() -> None:
    base = table([-1.0, -2.0, 0.0], [1.0, 2.0, 3.0])
    at = table([1.0, 0.0, 4.0], [0.5, 1.0, float("nan")], [True, True, False])
    per = pair_gains(base, at.iloc[::-1]).set_index("pair_id")
    assert per.loc["p2", "pref_gain"] == 4.0 and per.loc["p0", "util_drop"] == 0.5
    assert per["util_in_domain"].tolist() == [True, True, False]
    g = measured_gains(base, at)
    assert g.pref_gain == per["pref_gain"].mean()


def test_the_nested_interval_is_wider_when_seeds_disagree() -> None:
    rng = np.random.default_rng(0)
    pairs = rng.normal(0.0, 1.0, 16)
    same = [pairs, pairs, pairs]
    apart = [pairs - 3.0, pairs, pairs + 3.0]
    lo_s, hi_s = nested_interval(same)
    lo_a, hi_a = nested_interval(apart)
    assert lo_s < pairs.mean() < hi_s and lo_a < pairs.mean() < hi_a
    assert hi_a - lo_a > 2 * (hi_s - lo_s)
    assert nested_interval([pairs]) != nested_interval([pairs])  # NaN: one group only
    assert nested_interval(same, seed=1) != nested_interval(same, seed=2)
    assert nested_interval(same, seed=1) == nested_interval(same, seed=1)
