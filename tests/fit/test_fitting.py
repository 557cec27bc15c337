"""Fitting: parameter recovery, the constraint, determinism, degenerate inputs, convergence
reporting, bootstrap intervals, per-pair fits and the three-way generalisation R²."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import pytest

import unisteer.fit.solve as solve_module
from unisteer.errors import UnisteerError
from unisteer.fit import (
    CurveFit,
    FitConvergenceError,
    FitError,
    SweepFit,
    choose_multiplier,
    fit_preference,
    fit_sweep,
    fit_utility,
    generalization,
    regions,
    transfer_r2,
)
from unisteer.fit.curves import PREFERENCE, UTILITY
from unisteer.fit.data import mean_points
from unisteer.fit.synthetic import EXAMPLE_PREFERENCE, EXAMPLE_UTILITY, synthetic_table

M = np.linspace(-30, 30, 41)
DENSE = np.linspace(-30, 30, 601)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    # 8 pairs, noise sd 0.1 per point: the mean curve has noise sd ≈ 0.035, against a
    # PrefOdds range of ≈ 8 and a UtilOdds range of ≈ 4.5.
    return synthetic_table(M, EXAMPLE_PREFERENCE, EXAMPLE_UTILITY, n_pairs=8, noise=0.1, seed=0)


@pytest.fixture(scope="module")
def fitted(table: pd.DataFrame) -> SweepFit:
    return fit_sweep(table)


# -- recovery -----------------------------------------------------------------------------------


def test_recovers_the_curves(fitted: SweepFit) -> None:
    for fit, truth, model in (
        (fitted.preference, EXAMPLE_PREFERENCE, PREFERENCE),
        (fitted.utility, EXAMPLE_UTILITY, UTILITY),
    ):
        assert fit.converged, fit.message
        assert fit.r2 >= 0.99
        true_curve = model.value(DENSE, model.vector(truth))
        # the fitted curve, not just its parameters, is what must match: within 3 % of the
        # curve's range everywhere on the swept interval (observed ≤ 1.7 % over 12 seeds)
        err = np.max(np.abs(fit.predict(DENSE) - true_curve)) / np.ptp(true_curve)
        assert err < 0.03


def test_recovers_the_well_identified_parameters(fitted: SweepFit) -> None:
    """Decay parameters trade off (L against p, m± against β), so single L or p values are not
    tested. What the data pin down: the slope α, the utility level β_u and floor b_u, and the
    half-decay points (where D_p = 0.5 of its peak; a function of m±, L±, p± together).
    Tolerances: over 12 noise seeds at this noise level the worst errors were α 4.6 %,
    β_u and b_u 1.5 %, half-decay points 13.5 %; the bounds below leave margin."""
    pref, util = fitted.preference, fitted.utility
    assert pref.params["alpha"] == pytest.approx(EXAMPLE_PREFERENCE["alpha"], rel=0.10)
    assert util.params["beta"] == pytest.approx(EXAMPLE_UTILITY["beta"], rel=0.05)
    assert util.params["b"] == pytest.approx(EXAMPLE_UTILITY["b"], rel=0.05)
    truth = regions(CurveFit.from_params("preference", EXAMPLE_PREFERENCE, M))
    found = regions(pref)
    for side in ("positive", "negative"):
        want = getattr(truth, side).convergence_start
        assert getattr(found, side).convergence_start == pytest.approx(want, rel=0.20)


def test_noise_free_arrays_recover_every_parameter() -> None:
    m = np.linspace(-30, 30, 21)
    y = UTILITY.value(m, UTILITY.vector(EXAMPLE_UTILITY))
    fit = fit_utility(m, y)
    assert fit.r2 > 1 - 1e-9
    for name, value in EXAMPLE_UTILITY.items():
        assert fit.params[name] == pytest.approx(value, rel=1e-3, abs=1e-3), name


def test_constraint_holds_at_the_solution(fitted: SweepFit) -> None:
    for fit in (fitted.preference, fitted.utility):
        assert fit.constraint_violation < 1e-6
        d0_plus = fit.decay(0.0)
        d0_minus = fit.decay(-1e-300)
        assert abs(d0_plus - d0_minus) < 1e-6
        # and the pieces are bounded as the model says
        assert fit.decay(DENSE).min() > 0 and fit.decay(DENSE).max() <= 1


def test_result_reports_what_was_fitted(fitted: SweepFit, table: pd.DataFrame) -> None:
    pref = fitted.preference
    means = table.groupby("m")["pref_odds"].mean()
    np.testing.assert_allclose(pref.m, means.index.to_numpy())
    np.testing.assert_allclose(pref.y, means.to_numpy())
    np.testing.assert_allclose(pref.residuals, pref.y - pref.predict(pref.m))
    ss_res = float(np.sum(pref.residuals**2))
    ss_tot = float(np.sum((pref.y - pref.y.mean()) ** 2))
    assert pref.r2 == pytest.approx(1 - ss_res / ss_tot)
    assert pref.n_points == 41 and pref.n_pairs == 8
    assert pref.n_starts >= 16 and 1 <= pref.n_converged_starts <= pref.n_starts
    assert pref.sem is not None and np.all(pref.sem > 0)
    assert set(pref.params) == set(PREFERENCE.names)
    assert set(fitted.utility.params) == set(UTILITY.names)


def test_results_are_immutable(fitted: SweepFit) -> None:
    fit = fitted.preference
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.r2 = 0.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        fit.params["alpha"] = 0.0  # type: ignore[index]
    with pytest.raises(ValueError):
        fit.residuals[0] = 1.0


def test_same_seed_gives_the_identical_result(fitted: SweepFit, table: pd.DataFrame) -> None:
    # the arrays path on the same mean points, same seed: bit-identical to the table fit
    cp = mean_points(table, "preference")
    again = fit_preference(cp.m, cp.y, seed=0)
    assert dict(again.params) == dict(fitted.preference.params)
    assert np.array_equal(again.residuals, fitted.preference.residuals)
    assert again.message == fitted.preference.message


def test_to_dict_round_trip(fitted: SweepFit) -> None:
    back = CurveFit.from_dict(fitted.preference.to_dict())
    assert dict(back.params) == dict(fitted.preference.params)
    np.testing.assert_array_equal(back.predict(DENSE), fitted.preference.predict(DENSE))
    assert back.converged and back.r2 == fitted.preference.r2


# -- degenerate inputs --------------------------------------------------------------------------

GOOD_M = np.linspace(-3, 3, 9)
GOOD_Y = np.tanh(GOOD_M)


@pytest.mark.parametrize(
    ("m", "y", "needle"),
    [
        (GOOD_M, np.full(9, 2.5), "flat"),
        (np.linspace(-3, 3, 6), np.tanh(np.linspace(-3, 3, 6)), "distinct"),
        (np.repeat(np.linspace(-3, 3, 6), 3), np.repeat(np.tanh(np.linspace(-3, 3, 6)), 3),
         "distinct"),
        (np.where(np.arange(9) == 4, np.nan, GOOD_M), GOOD_Y, "multiplier value(s) are NaN"),
        (GOOD_M, np.where(np.arange(9) == 2, np.nan, GOOD_Y), "NaN or infinite (at m = -1.5)"),
        (GOOD_M, np.where(np.arange(9) == 2, np.inf, GOOD_Y), "NaN or infinite"),
        (np.linspace(0, 6, 9), GOOD_Y, "both signs"),
        (np.linspace(-6, -1, 9), GOOD_Y, "both signs"),
    ],
)  # fmt: skip
def test_degenerate_arrays_get_a_specific_error(m: Any, y: Any, needle: str) -> None:
    with pytest.raises(FitError) as info:
        fit_preference(m, y)
    assert needle in str(info.value)
    assert isinstance(info.value, UnisteerError)


def _table(m: np.ndarray, pref: np.ndarray, util: np.ndarray, ok: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {"pair_id": "a", "m": m, "pref_odds": pref, "util_odds": np.where(ok, util, np.nan),
         "util_in_domain": ok}
    )  # fmt: skip


def test_out_of_domain_utility_points_are_dropped_then_counted() -> None:
    m = np.linspace(-5, 5, 11)
    util = UTILITY.value(m, UTILITY.vector({**EXAMPLE_UTILITY}))
    ok = np.ones(11, dtype=bool)
    ok[[0, 10]] = False  # 9 distinct m remain: fits
    fit = fit_utility(_table(m, np.tanh(m), util, ok))
    assert fit.n_points == 9 and fit.converged
    ok[[1, 2, 9]] = False  # 6 distinct m remain: error that names the cause
    with pytest.raises(FitError, match="only 6 distinct multiplier"):
        fit_utility(_table(m, np.tanh(m), util, ok))


def test_nan_utility_marked_in_domain_is_an_error() -> None:
    m = np.linspace(-5, 5, 11)
    util = np.cos(m / 4)
    util[3] = np.nan
    table = pd.DataFrame(
        {"pair_id": "a", "m": m, "pref_odds": np.tanh(m), "util_odds": util,
         "util_in_domain": True}
    )  # fmt: skip
    with pytest.raises(FitError, match="util_in_domain=False"):
        fit_utility(table)


def test_nan_m_in_a_table_is_an_error() -> None:
    m = np.linspace(-5, 5, 11)
    m[4] = np.nan
    table = _table(m, np.tanh(np.nan_to_num(m)), np.cos(m), np.ones(11, dtype=bool))
    with pytest.raises(FitError, match="multiplier value"):
        fit_preference(table)


def test_missing_column_and_misuse_are_explained(table: pd.DataFrame) -> None:
    with pytest.raises(FitError, match="pref_odds"):
        fit_preference(table.drop(columns="pref_odds"))
    with pytest.raises(FitError, match="need a sweep table"):
        fit_preference(GOOD_M, GOOD_Y, per_pair=True)
    with pytest.raises(TypeError):
        fit_preference(GOOD_M)


# -- convergence reporting ----------------------------------------------------------------------


def test_a_fit_that_does_not_converge_is_never_returned_as_fine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing(fun: Any, x0: np.ndarray, **kwargs: Any) -> Any:
        class Result:
            x = x0
            success = False
            status = 9
            message = "Iteration limit reached"

        return Result()

    monkeypatch.setattr(solve_module, "minimize", failing)
    m = np.linspace(-30, 30, 21)
    y = PREFERENCE.value(m, PREFERENCE.vector(EXAMPLE_PREFERENCE))
    with pytest.raises(FitConvergenceError, match="did not converge") as info:
        fit_preference(m, y)
    assert info.value.result.converged is False
    assert "Iteration limit reached" in info.value.result.message

    loose = fit_preference(m, y, strict=False)
    assert loose.converged is False and loose.status == 9
    util = CurveFit.from_params("utility", EXAMPLE_UTILITY, m)
    with pytest.raises(FitConvergenceError):
        choose_multiplier(SweepFit(loose, util))
    with pytest.raises(FitConvergenceError):
        regions(loose)


# -- bootstrap, per pair ------------------------------------------------------------------------


def test_bootstrap_intervals_are_seeded_and_ordered() -> None:
    small = synthetic_table(
        np.linspace(-30, 30, 21), EXAMPLE_PREFERENCE, EXAMPLE_UTILITY, n_pairs=6, noise=0.2,
        pair_spread=0.2, seed=3,
    )  # fmt: skip
    a = fit_preference(small, bootstrap=5, seed=1)
    b = fit_preference(small, bootstrap=5, seed=1)
    assert a.ci is not None and a.ci == b.ci
    assert a.ci_level == 0.95 and a.n_bootstrap == 5 and 2 <= a.n_bootstrap_converged <= 5
    for name, (lo, hi) in a.ci.items():
        assert np.isfinite(lo) and lo <= hi, name
    lo, hi = a.ci["alpha"]
    assert hi - lo < 0.5  # pairs differ by an offset only, so the slope is well determined


def test_per_pair_fits_and_their_failures() -> None:
    m = np.linspace(-30, 30, 21)
    three = synthetic_table(
        m, EXAMPLE_PREFERENCE, EXAMPLE_UTILITY, n_pairs=3, noise=0.05, pair_spread=0.5, seed=2
    )
    pairs = fit_preference(three, per_pair=True, n_starts=8)
    assert sorted(pairs.fits) == ["p000", "p001", "p002"] and not pairs.errors
    for pid, fit in pairs.fits.items():
        assert fit.converged and fit.r2 > 0.99, pid
        assert fit.n_points == 21 and pid in fit.label
    # a pair whose utility is flat: recorded with strict=False, raised (naming it) otherwise
    flat = three.copy()
    flat.loc[flat["pair_id"] == "p001", "util_odds"] = 1.0
    loose = fit_utility(flat, per_pair=True, n_starts=4, strict=False)
    assert set(loose.errors) == {"p001"} and "flat" in loose.errors["p001"]
    assert set(loose.fits) == {"p000", "p002"}
    with pytest.raises(FitError, match="pair 'p001'"):
        fit_utility(flat, per_pair=True, n_starts=4)


# -- generalisation -----------------------------------------------------------------------------


def test_generalisation_three_ways(table: pd.DataFrame, fitted: SweepFit) -> None:
    # the test split follows a shifted curve: a smaller slope and raised floors
    shifted_pref = {**EXAMPLE_PREFERENCE, "alpha": 0.6, "b": 0.5}
    shifted_util = {**EXAMPLE_UTILITY, "b": -2.0}
    test = synthetic_table(M, shifted_pref, shifted_util, n_pairs=8, noise=0.1, seed=1)
    g = generalization(fitted, test)
    assert g.train is fitted
    for scores in (g.preference, g.utility):
        assert scores.train >= 0.99 and scores.test >= 0.99
        assert scores.train_to_test < min(scores.train, scores.test) - 0.05
    # train → test is R² of the train parameters on the test mean curve, by hand
    cp = mean_points(test, "preference")
    residual = cp.y - fitted.preference.predict(cp.m)
    by_hand = 1 - np.sum(residual**2) / np.sum((cp.y - cp.y.mean()) ** 2)
    assert g.preference.train_to_test == pytest.approx(by_hand)
    assert transfer_r2(fitted.preference, test) == pytest.approx(by_hand)
    assert set(g.to_dict()["utility"]) == {"train", "test", "train_to_test"}
