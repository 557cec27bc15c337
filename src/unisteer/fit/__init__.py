"""Curve fitting with the activation-manifold model (paper §4, Eqs. 12, 15, 17).

    from unisteer.fit import fit_sweep, choose_multiplier, regions, generalization
    fit = fit_sweep(table)                      # table: a sweep's tidy table (sweep.parquet)
    fit.preference.params, fit.preference.r2    # parameters by name, R²
    choice = choose_multiplier(fit, max_util_drop=1.0)
    safer = choose_multiplier(fit, 1.0, margin=drop_margin(table, 0.9))  # 90% over pairs
    g = generalization(train_table, test_table) # R² on train, on test, and train → test

Modules: :mod:`~unisteer.fit.curves` (the model functions), :mod:`~unisteer.fit.data`
(tables and arrays to checked points), :mod:`~unisteer.fit.solve` (SLSQP multi-start),
:mod:`~unisteer.fit.fitting` (the fitting entry points), :mod:`~unisteer.fit.bootstrap`,
:mod:`~unisteer.fit.generalize`, :mod:`~unisteer.fit.derive` (slope, regions, choice of m),
:mod:`~unisteer.fit.margin` (a confidence margin on the budget), :mod:`~unisteer.fit.refine`
(where an adaptive sweep measures next).
"""

from unisteer.fit.curves import (
    DECAY_NAMES,
    PREFERENCE_NAMES,
    UTILITY_NAMES,
    constraint_violation,
    decay,
    preference,
    utility,
)
from unisteer.fit.data import MIN_DISTINCT_M
from unisteer.fit.derive import (
    LinearSlope,
    MultiplierChoice,
    Regions,
    SideRegions,
    choose_multiplier,
    linear_slope,
    regions,
)
from unisteer.fit.errors import FitConvergenceError, FitError
from unisteer.fit.fitting import fit_curve, fit_preference, fit_sweep, fit_utility
from unisteer.fit.generalize import Generalization, R2Scores, generalization, transfer_r2
from unisteer.fit.margin import DropMargin, drop_margin
from unisteer.fit.result import CurveFit, PairFits, SweepFit, r_squared

__all__ = [
    "DECAY_NAMES",
    "MIN_DISTINCT_M",
    "PREFERENCE_NAMES",
    "UTILITY_NAMES",
    "CurveFit",
    "DropMargin",
    "FitConvergenceError",
    "FitError",
    "Generalization",
    "LinearSlope",
    "MultiplierChoice",
    "PairFits",
    "R2Scores",
    "Regions",
    "SideRegions",
    "SweepFit",
    "choose_multiplier",
    "constraint_violation",
    "decay",
    "drop_margin",
    "fit_curve",
    "fit_preference",
    "fit_sweep",
    "fit_utility",
    "generalization",
    "linear_slope",
    "preference",
    "r_squared",
    "regions",
    "transfer_r2",
    "utility",
]
