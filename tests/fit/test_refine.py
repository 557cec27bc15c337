"""The adaptive sweep's planner: where it adds points and that its loop resolves the choice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from unisteer.fit import choose_multiplier, fit_sweep
from unisteer.fit.curves import continuous_m_neg
from unisteer.fit.refine import default_tolerance, refinement_points
from unisteer.fit.synthetic import synthetic_table
from unisteer.scoring.table import summarize_sweep

# Preference rises through m = 0; utility falls fast: a 1-nat drop near |m| ≈ 1.2, while the
# coarse grid's first step (6) is ~12 nats over the budget: the DiffMean.
PREF = {"alpha": 2.0, "beta": 1.0, "b": -30.0, "m_pos": 0.5, "L_pos": 400.0, "p_pos": 1.0}
PREF.update(L_neg=400.0, p_neg=1.0, m_neg=continuous_m_neg(0.5, 400.0, 1.0, 400.0, 1.0))
UTIL = {"beta": 20.0, "b": -140.0, "m_pos": 0.0, "L_pos": 25.0, "p_pos": 1.0}
UTIL.update(L_neg=25.0, p_neg=1.0, m_neg=0.0)
COARSE = [float(x) for x in np.linspace(-60, 60, 21)]


def measure(ms: list[float]) -> pd.DataFrame:
    return synthetic_table(ms, PREF, UTIL, n_pairs=4)


def plan(table: pd.DataFrame, tol: float) -> tuple[list[float], object]:
    fit = fit_sweep(table, strict=False)
    choice = choose_multiplier(fit, 1.0) if fit.converged else None
    means = summarize_sweep(table)
    points = refinement_points(
        fit, means["m"], means["util_odds"], max_util_drop=1.0, tol=tol, choice=choice
    )
    return [p.m for p in points], choice


def test_the_first_round_brackets_the_budget_crossing_on_both_signs() -> None:
    tol = default_tolerance(COARSE)
    assert tol == pytest.approx(1.5)
    # fewer coarse points: the same resolution (1/80 of the range), not a quarter of the step
    assert default_tolerance(np.linspace(-60, 60, 11)) == pytest.approx(1.5)
    assert default_tolerance(np.linspace(-60, 60, 41)) == pytest.approx(0.75)
    table = measure(COARSE)
    fit = fit_sweep(table, strict=False)
    means = summarize_sweep(table)
    points = refinement_points(fit, means["m"], means["util_odds"], max_util_drop=1.0, tol=tol)
    pos = [p for p in points if p.m > 0 and "budget" in p.reason]
    neg = [p for p in points if p.m < 0 and "budget" in p.reason]
    assert len(pos) == 1 and 0 < pos[0].m < 6 and len(neg) == 1 and -6 < neg[0].m < 0
    assert all(min(abs(p.m - x) for x in COARSE) > tol for p in points)


def test_the_loop_ends_with_a_nonzero_choice_resolved_to_the_tolerance() -> None:
    tol = default_tolerance(COARSE)
    table = measure(COARSE)
    coarse_choice = choose_multiplier(fit_sweep(table), 1.0)
    grid = list(COARSE)
    for _ in range(6):
        new, choice = plan(table, tol)
        if not new:
            break
        grid += new
        table = pd.concat([table, measure(new)], ignore_index=True)
    else:
        pytest.fail("the refinement did not stop")
    assert choice is not None and choice.m != 0.0
    assert min(abs(choice.m - x) for x in grid) <= tol
    # the truth: the largest PrefOdds with a utility drop of at most 1 nat
    dense = np.linspace(-6, 6, 120001)
    true_u = UTIL["beta"] / (1 + dense**2 / UTIL["L_pos"]) + UTIL["b"]
    ok = true_u[np.argmin(np.abs(dense))] - true_u <= 1.0
    true_m = float(dense[ok].max())  # preference rises with m here
    assert choice.m == pytest.approx(true_m, abs=tol)
    assert abs(choice.m - true_m) < abs(coarse_choice.m - true_m)


def test_no_points_when_everything_is_resolved() -> None:
    grid = [float(x) for x in np.linspace(-3, 3, 61)]
    table = measure(grid)
    new, _ = plan(table, tol=0.2)
    assert new == []


def test_the_grid_needs_zero_and_a_positive_tolerance() -> None:
    table = measure(COARSE)
    fit = fit_sweep(table, strict=False)
    means = summarize_sweep(table)
    with pytest.raises(ValueError, match="m = 0"):
        refinement_points(fit, means["m"] + 1, means["util_odds"], max_util_drop=1.0, tol=1)
    with pytest.raises(ValueError, match="tol"):
        refinement_points(fit, means["m"], means["util_odds"], max_util_drop=1.0, tol=0)
