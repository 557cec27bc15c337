"""Property tests of the curve-model functions (Eq. 12, 15, 17) and their derivatives."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from unisteer.fit.curves import (
    PREFERENCE,
    UTILITY,
    constraint_violation,
    continuity_gap,
    continuity_gap_gradient,
    continuous_m_neg,
    decay,
    preference,
    utility,
)

# Ranges chosen so that D never underflows to 0 in float64: (u²/L)·p stays below ~700.
centres = st.floats(-50, 50)
scales = st.floats(0.01, 1e4)
powers = st.floats(0.01, 10)
ms = st.floats(-100, 100)


@st.composite
def decays(draw: st.DrawFn) -> tuple[float, ...]:
    return tuple(draw(s) for s in (centres, scales, powers, centres, scales, powers))


@st.composite
def continuous_decays(draw: st.DrawFn) -> tuple[float, ...]:
    """Decay parameters that satisfy the continuity constraint D(0⁺) = D(0⁻)."""
    m_pos = draw(st.floats(-20, 20))
    l_pos, l_neg = draw(st.floats(1, 1e3)), draw(st.floats(1, 1e3))
    p_pos, p_neg = draw(st.floats(0.1, 5)), draw(st.floats(0.1, 5))
    sign = draw(st.sampled_from([-1.0, 1.0]))
    m_neg = continuous_m_neg(m_pos, l_pos, p_pos, l_neg, p_neg, sign=sign)
    return (m_pos, l_pos, p_pos, m_neg, l_neg, p_neg)


@settings(max_examples=200, deadline=None)
@given(decays(), st.lists(ms, min_size=1, max_size=20))
def test_decay_is_in_zero_one(d: tuple[float, ...], m: list[float]) -> None:
    values = decay(np.array(m), *d)
    assert np.all(values > 0)
    assert np.all(values <= 1)


@settings(max_examples=100, deadline=None)
@given(decays())
def test_decay_is_one_at_each_sides_peak(d: tuple[float, ...]) -> None:
    m_pos, _, _, m_neg, _, _ = d
    if m_pos >= 0:
        assert decay(m_pos, *d) == 1.0
    if m_neg < 0:
        assert decay(m_neg, *d) == 1.0


@settings(max_examples=200, deadline=None)
@given(continuous_decays())
def test_decay_is_continuous_at_zero_when_the_constraint_holds(d: tuple[float, ...]) -> None:
    at_zero = float(decay(0.0, *d))
    just_left = float(decay(-1e-300, *d))  # the negative branch evaluated at 0
    assert abs(just_left - at_zero) <= 1e-9 * max(at_zero, 1e-300) + 1e-300
    assert constraint_violation(np.array(d)) <= 1e-9
    assert abs(continuity_gap(np.array(d))) <= 1e-9 * max(1.0, abs(np.log(at_zero)))


@settings(max_examples=200, deadline=None)
@given(decays(), ms, ms)
def test_decay_decreases_away_from_the_peak(d: tuple[float, ...], a: float, b: float) -> None:
    m_pos, _, _, m_neg, _, _ = d
    lo, hi = sorted((a, b))
    # positive side, beyond the peak (or beyond 0 when the peak lies left of 0)
    start = max(m_pos, 0.0)
    if lo >= start:
        assert decay(lo, *d) >= decay(hi, *d)
    # negative side, beyond the peak going left
    end = min(m_neg, 0.0)
    if hi <= end and hi < 0:
        assert decay(hi, *d) >= decay(lo, *d)


@settings(max_examples=100, deadline=None)
@given(decays(), st.floats(-5, 5), st.floats(-5, 5), st.floats(-5, 5), ms)
def test_model_functions_follow_their_equations(
    d: tuple[float, ...], alpha: float, beta: float, b: float, m: float
) -> None:
    dv = float(decay(m, *d))
    assert np.isclose(preference(m, alpha, beta, b, *d), (alpha * m + beta) * dv + b)
    assert np.isclose(utility(m, beta, b, *d), beta * dv + b)


def _numeric_jacobian(
    f: Callable[[np.ndarray], np.ndarray], theta: np.ndarray, h: float = 1e-6
) -> np.ndarray:
    cols = []
    for i in range(theta.size):
        step = np.zeros_like(theta)
        step[i] = h * max(1.0, abs(theta[i]))
        cols.append((f(theta + step) - f(theta - step)) / (2 * step[i]))
    return np.column_stack(cols)


@settings(max_examples=50, deadline=None)
@given(
    st.tuples(
        st.floats(-3, 3), st.floats(0.5, 20), st.floats(0.3, 3),
        st.floats(-3, 3), st.floats(0.5, 20), st.floats(0.3, 3),
    ),
    st.floats(-2, 2),
    st.floats(-2, 2),
)  # fmt: skip
def test_analytic_jacobians_match_finite_differences(
    d: tuple[float, ...], lin1: float, lin2: float
) -> None:
    m = np.linspace(-6, 6, 13)
    for model, lin in ((PREFERENCE, [lin1, lin2, 0.3]), (UTILITY, [lin1, lin2])):
        theta = np.array([*lin, *d])
        numeric = _numeric_jacobian(lambda t, model=model: model.value(m, t), theta)
        np.testing.assert_allclose(model.jacobian(m, theta), numeric, rtol=1e-5, atol=1e-6)
    dv = np.array(d)
    numeric_gap = _numeric_jacobian(lambda t: np.array([continuity_gap(t)]), dv)[0]
    np.testing.assert_allclose(continuity_gap_gradient(dv), numeric_gap, rtol=1e-5, atol=1e-7)
