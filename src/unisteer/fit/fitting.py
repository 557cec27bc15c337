"""The public fitting functions: mean curve by default, per pair on request.

``fit_preference(table)`` fits Eq. 15 to the mean PrefOdds curve over pairs,
``fit_utility(table)`` fits Eq. 17 to the mean in-domain UtilOdds curve, and
``fit_sweep(table)`` does both. Plain arrays work too: ``fit_preference(m, y)``.

Convergence policy (see :mod:`unisteer.fit.result`): with ``strict=True`` (the default) a fit
in which no start converged raises :class:`~unisteer.fit.errors.FitConvergenceError` (its
``result`` attribute holds the best attempt); with ``strict=False`` it is returned with
``converged = False`` and the caller must check. Degenerate data always raises
:class:`~unisteer.fit.errors.FitError` (per pair with ``strict=False``: recorded in
:attr:`PairFits.errors` instead).
"""

from __future__ import annotations

from typing import Literal, Protocol, TypeAlias, TypedDict, Unpack, cast, overload

import numpy as np
import numpy.typing as npt
import pandas as pd

from unisteer.fit.bootstrap import bootstrap_intervals
from unisteer.fit.curves import (
    CurveModel,
    Kind,
    constraint_violation,
    feature_widths,
    grid_resolution,
    local_spacing,
    model_for,
)
from unisteer.fit.data import CurvePoints, array_points, pair_points, points
from unisteer.fit.errors import FitError
from unisteer.fit.result import CurveFit, PairFits, SweepFit, r_squared
from unisteer.fit.solve import solve

Data: TypeAlias = "pd.DataFrame | npt.ArrayLike"


def fit_points(
    cp: CurvePoints, *, n_starts: int = 16, seed: int = 0, resolution: bool = True
) -> CurveFit:
    """Fit checked points; the result may be unconverged (no exception here). With
    ``resolution`` (the default) no feature of the decay may be narrower than the grid's
    spacing on its side (see :mod:`unisteer.fit.solve`); ``CurveFit.at_resolution`` flags the
    sides where the fit ended on that bound."""
    model = model_for(cp.kind)
    width = grid_resolution(cp.m) if resolution else None
    sol = solve(model, cp.m, cp.y, n_starts=n_starts, seed=seed, min_width=width)
    fitted = model.value(cp.m, sol.theta)
    return CurveFit(
        kind=cp.kind,
        params=dict(zip(model.names, sol.theta.tolist(), strict=True)),
        r2=r_squared(cp.y, fitted),
        m=cp.m,
        y=cp.y,
        residuals=cp.y - fitted,
        converged=sol.converged,
        status=sol.status,
        message=sol.message,
        constraint_violation=constraint_violation(model.decay_part(sol.theta)),
        n_points=int(cp.m.size),
        n_starts=sol.n_starts,
        n_converged_starts=sol.n_converged,
        seed=seed,
        sem=cp.sem,
        n_pairs=cp.n_pairs,
        label=cp.label,
        at_resolution=_unresolved_sides(cp.m, sol.theta, model, sol.at_resolution),
        min_width=width,
    )


def _unresolved_sides(
    m: npt.NDArray[np.float64],
    theta: npt.NDArray[np.float64],
    model: CurveModel,
    at_bound: tuple[bool, bool],
) -> tuple[bool, bool]:
    """Per side: the fit ended on the resolution bound, or its feature is narrower than the
    grid interval around its peak (possible where an adaptive sweep refined elsewhere)."""
    d = model.decay_part(theta)
    widths = feature_widths(d)
    out = []
    for j, (width, bound) in enumerate(zip(widths, at_bound, strict=True)):
        peak = float(d[3 * j])
        out.append(bool(bound or width < local_spacing(m, peak) * (1 - 1e-6)))
    return out[0], out[1]


def _fit_pairs(
    table: pd.DataFrame, kind: Kind, *, n_starts: int, seed: int, strict: bool, resolution: bool
) -> PairFits:
    fits: dict[str, CurveFit] = {}
    errors: dict[str, str] = {}
    for pid, rows in pair_points(table, kind).items():
        try:
            cp = array_points(rows["m"], rows["y"], kind, label=f"pair {pid!r} {kind} curve")
        except FitError as e:
            if strict:
                raise
            errors[pid] = str(e)
            continue
        fit = fit_points(cp, n_starts=n_starts, seed=seed, resolution=resolution)
        fits[pid] = fit.check() if strict else fit
    return PairFits(kind, fits, errors)


def fit_curve(
    kind: Kind,
    data: Data,
    y: npt.ArrayLike | None = None,
    *,
    per_pair: bool = False,
    n_starts: int = 16,
    seed: int = 0,
    bootstrap: int = 0,
    ci_level: float = 0.95,
    bootstrap_starts: int = 3,
    strict: bool = True,
    resolution: bool = True,
) -> CurveFit | PairFits:
    """Fit one curve kind; see :func:`fit_preference` for the arguments."""
    if (per_pair or bootstrap) and not isinstance(data, pd.DataFrame):
        what = "per-pair fits" if per_pair else "bootstrap intervals over pairs"
        raise FitError(f"{what} need a sweep table with a pair_id column, not arrays")
    if per_pair:
        return _fit_pairs(
            data, kind, n_starts=n_starts, seed=seed, strict=strict, resolution=resolution
        )
    cp = points(data, y, kind)
    fit = fit_points(cp, n_starts=n_starts, seed=seed, resolution=resolution)
    if strict:
        fit.check()
    if bootstrap and fit.converged:
        assert isinstance(data, pd.DataFrame)
        fit = bootstrap_intervals(
            data, fit, n=bootstrap, level=ci_level, seed=seed, n_starts=bootstrap_starts
        )
    return fit


class FitOptions(TypedDict, total=False):
    """Options every fitting function takes (defaults in :func:`fit_curve`)."""

    n_starts: int
    seed: int
    bootstrap: int
    ci_level: float
    bootstrap_starts: int
    strict: bool
    resolution: bool


class CurveFitter(Protocol):
    """A fitting function of one curve kind: the mean curve (a :class:`CurveFit`) by default,
    every pair's own curve (:class:`PairFits`) with ``per_pair=True``."""

    @overload
    def __call__(
        self,
        data: Data,
        y: npt.ArrayLike | None = None,
        *,
        per_pair: Literal[False] = False,
        **options: Unpack[FitOptions],
    ) -> CurveFit: ...

    @overload
    def __call__(
        self,
        data: Data,
        y: npt.ArrayLike | None = None,
        *,
        per_pair: Literal[True],
        **options: Unpack[FitOptions],
    ) -> PairFits: ...


def _fitter(kind: Kind, doc: str) -> CurveFitter:
    def fit(
        data: Data,
        y: npt.ArrayLike | None = None,
        *,
        per_pair: bool = False,
        **options: Unpack[FitOptions],
    ) -> CurveFit | PairFits:
        return fit_curve(kind, data, y, per_pair=per_pair, **options)

    fit.__name__ = fit.__qualname__ = f"fit_{kind}"
    fit.__doc__ = doc
    return cast(CurveFitter, fit)


fit_preference = _fitter(
    "preference",
    """Fit PrefOdds(m) = (α·m + β)·D_p(m) + b_p (Eq. 15).

    ``data`` is a sweep table (the mean curve over pairs is fitted) or an array of m with
    ``y`` the PrefOdds values (fitted as given). ``per_pair=True`` fits each pair of the table
    separately and returns :class:`PairFits`. ``bootstrap=B`` adds percentile intervals at
    ``ci_level`` from B resamples of pairs (with replacement), each refitted from the full-data
    fit plus ``bootstrap_starts`` seeded starts. ``n_starts`` seeded SLSQP starts (≥ 16
    recommended) and ``seed`` make the result deterministic. ``strict``: see the module doc.
    ``resolution=False`` lifts the bound that keeps the decay no narrower than the grid.
    """,
)

fit_utility = _fitter(
    "utility",
    """Fit UtilOdds(m) = β_u·D_u(m) + b_u (Eq. 17) to in-domain points only.

    Arguments as for :func:`fit_preference`; out-of-domain rows (``util_in_domain`` False) are
    dropped before averaging, and at least 7 distinct m must remain.
    """,
)


def fit_sweep(table: pd.DataFrame, **options: Unpack[FitOptions]) -> SweepFit:
    """Fit the mean preference and utility curves of a sweep table (options as for
    :func:`fit_preference`)."""
    return SweepFit(fit_preference(table, **options), fit_utility(table, **options))
