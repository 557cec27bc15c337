"""Derived quantities on hand-built curves whose answers are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unisteer.fit import (
    CurveFit,
    FitConvergenceError,
    SweepFit,
    choose_multiplier,
    linear_slope,
    regions,
)
from unisteer.fit.curves import continuous_m_neg

M = np.linspace(-3, 3, 13)
SYMMETRIC = {"m_pos": 0.0, "L_pos": 1.0, "p_pos": 1.0, "m_neg": 0.0, "L_neg": 1.0, "p_neg": 1.0}


def sweep_fit(alpha: float = 1.0) -> SweepFit:
    """PrefOdds = α·m/(1 + m²) (peak ±0.5 at m = ±1); UtilOdds = 4/(1 + m²) - 2 (2 at m = 0)."""
    pref = CurveFit.from_params("preference", {"alpha": alpha, "beta": 0, "b": 0, **SYMMETRIC}, M)
    util = CurveFit.from_params("utility", {"beta": 4.0, "b": -2.0, **SYMMETRIC}, M)
    return SweepFit(pref, util)


def test_choice_with_a_loose_budget_is_the_preference_peak() -> None:
    # the drop at m = 1 is 2 - 0 = 2 nats, within a budget of 3
    c = choose_multiplier(sweep_fit(), max_util_drop=3.0)
    assert c.m == pytest.approx(1.0, abs=1e-7)
    assert c.pref == pytest.approx(0.5) and c.pref_gain == pytest.approx(0.5)
    assert c.util_drop == pytest.approx(2.0, abs=1e-6)
    assert not c.constraint_active and not c.at_range_edge


def test_choice_with_a_tight_budget_sits_on_the_budget() -> None:
    # 4/(1 + m²) - 2 ≥ 2 - 1  ⇔  |m| ≤ 1/√3, and PrefOdds rises on [0, 1]
    c = choose_multiplier(sweep_fit(), max_util_drop=1.0)
    assert c.m == pytest.approx(1 / math.sqrt(3), abs=1e-9)
    assert c.pref == pytest.approx(math.sqrt(3) / 4, abs=1e-9)
    assert c.util_drop == pytest.approx(1.0, abs=1e-9) and c.util_drop <= 1.0 + 1e-9
    assert c.util_at_zero == pytest.approx(2.0) and c.pref_at_zero == pytest.approx(0.0)
    assert c.constraint_active


def test_choice_follows_the_direction_that_raises_preference() -> None:
    # with α < 0 more of the concept needs negative m
    c = choose_multiplier(sweep_fit(alpha=-1.0), max_util_drop=1.0)
    assert c.m == pytest.approx(-1 / math.sqrt(3), abs=1e-9)
    assert c.pref_gain > 0
    assert choose_multiplier(sweep_fit(alpha=-1.0), 3.0).m == pytest.approx(-1.0, abs=1e-7)


def test_choice_with_no_budget_is_zero() -> None:
    c = choose_multiplier(sweep_fit(), max_util_drop=0.0)
    assert c.m == pytest.approx(0.0, abs=1e-9) and c.pref_gain == pytest.approx(0.0, abs=1e-9)


def test_choice_flags_the_edge_of_the_swept_range() -> None:
    flat_decay = {**SYMMETRIC, "L_pos": 1e8, "L_neg": 1e8}  # D ≈ 1: PrefOdds = m
    pref = CurveFit.from_params("preference", {"alpha": 1, "beta": 0, "b": 0, **flat_decay}, M)
    c = choose_multiplier(SweepFit(pref, sweep_fit().utility), max_util_drop=10.0)
    assert c.m == pytest.approx(3.0) and c.at_range_edge
    with pytest.raises(ValueError, match="non-negative"):
        choose_multiplier(sweep_fit(), max_util_drop=-1.0)


def test_regions_match_the_closed_form() -> None:
    # positive side: m₊ = 0, L = 4, p = 1: D = 0.9 at m = 2/3, D = 0.5 at m = 2
    # negative side: m₋ = 0, L = 9, p = 2: D = r at m = -3·sqrt(r^(-1/2) - 1)
    decay = {"m_pos": 0.0, "L_pos": 4.0, "p_pos": 1.0, "m_neg": 0.0, "L_neg": 9.0, "p_neg": 2.0}
    fit = CurveFit.from_params("preference", {"alpha": 1, "beta": 0, "b": 0, **decay}, M)
    r = regions(fit)
    assert r.positive.linear_end == pytest.approx(2 / 3)
    assert r.positive.convergence_start == pytest.approx(2.0)
    assert r.negative.linear_end == pytest.approx(-3 * math.sqrt(0.9**-0.5 - 1))
    assert r.negative.convergence_start == pytest.approx(-3 * math.sqrt(0.5**-0.5 - 1))
    for side in (r.positive, r.negative):
        assert fit.decay(side.linear_end) == pytest.approx(0.9)
        assert fit.decay(side.convergence_start) == pytest.approx(0.5)
    assert [r.region_of(x) for x in (0.5, 1.0, 2.5, -0.5, -1.0, -5.0)] == [
        "linear", "transitional", "convergence", "linear", "transitional", "convergence",
    ]  # fmt: skip


def test_regions_when_a_peak_lies_on_the_other_side() -> None:
    # m₊ = -1 (L = 4, p = 1): on m ≥ 0 the decay peaks at 0 with D(0) = 0.8; 0.9·0.8 is
    # reached at m = -1 + sqrt(4·(1/0.72 - 1)); m₋ is set for continuity at 0.
    m_neg = continuous_m_neg(-1.0, 4.0, 1.0, 4.0, 1.0, sign=-1.0)
    decay = {"m_pos": -1.0, "L_pos": 4.0, "p_pos": 1.0, "m_neg": m_neg, "L_neg": 4.0, "p_neg": 1.0}
    fit = CurveFit.from_params("preference", {"alpha": 1, "beta": 0, "b": 0, **decay}, M)
    r = regions(fit)
    assert r.positive.peak_m == 0.0 and r.positive.peak == pytest.approx(0.8)
    assert r.positive.linear_end == pytest.approx(-1 + math.sqrt(4 * (1 / 0.72 - 1)))
    assert r.negative.peak_m == pytest.approx(-1.0) and r.negative.peak == 1.0
    assert fit.decay(r.negative.convergence_start) == pytest.approx(0.5)


def test_linear_slope_matches_one_sided_derivatives() -> None:
    # α = 2, β = 1, m₊ = 1, L₊ = 4, p₊ = 1: D(0) = 0.8, D'(0⁺) = 0.8·2·1/5 = 0.32,
    # so dPref/dm(0⁺) = 2·0.8 + 1·0.32 = 1.92 and α·D(0) = 1.6
    m_neg = continuous_m_neg(1.0, 4.0, 1.0, 2.0, 0.5, sign=-1.0)
    decay = {"m_pos": 1.0, "L_pos": 4.0, "p_pos": 1.0, "m_neg": m_neg, "L_neg": 2.0, "p_neg": 0.5}
    fit = CurveFit.from_params("preference", {"alpha": 2, "beta": 1, "b": 3, **decay}, M)
    s = linear_slope(fit)
    assert s.alpha_d0 == pytest.approx(1.6)
    assert s.right == pytest.approx(1.92)
    h = 1e-7
    assert s.left == pytest.approx((fit.predict(-h) - fit.predict(-2 * h)) / h, rel=1e-5)
    assert s.right == pytest.approx((fit.predict(2 * h) - fit.predict(h)) / h, rel=1e-5)
    assert s.slope == pytest.approx((s.left + s.right) / 2)


def test_derived_quantities_refuse_a_discontinuous_fit() -> None:
    broken = {**SYMMETRIC, "m_pos": 2.0}  # D(0⁺) = 0.2 but D(0⁻) = 1
    pref = CurveFit.from_params("preference", {"alpha": 1, "beta": 0, "b": 0, **broken}, M)
    assert not pref.converged and pref.constraint_violation == pytest.approx(0.8)
    with pytest.raises(FitConvergenceError):
        linear_slope(pref)
    with pytest.raises(FitConvergenceError):
        choose_multiplier(SweepFit(pref, sweep_fit().utility))


def test_regions_survive_a_vanishing_decay_rate() -> None:
    """p near its lower bound: the power overflows in the naive formula; the boundary is
    then beyond reach (inf), not an OverflowError."""
    from unisteer.fit import CurveFit, regions

    fit = CurveFit.from_params(
        "preference",
        {
            "alpha": 1.0, "beta": 0.0, "b": 0.0,
            "m_pos": 0.5, "L_pos": 4.0, "p_pos": 1e-6,
            "m_neg": -0.5, "L_neg": 4.0, "p_neg": 1e-6,
        },
        np.linspace(-3.0, 3.0, 13),
    )  # fmt: skip
    reg = regions(fit)
    assert reg.positive.linear_end == float("inf")
    assert reg.negative.linear_end == float("-inf")
