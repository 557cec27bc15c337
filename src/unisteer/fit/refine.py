"""Where to measure next: the points an adaptive sweep adds after its coarse grid.

The choice of m (:func:`~unisteer.fit.derive.choose_multiplier`) is decided by two features
of the curves, on each sign of m: where the utility drop crosses the budget δ, and where
preference leaves its linear region (D_p below 0.9 of its peak, :func:`regions`). A coarse
grid can put its first step beyond both (the issue's DiffMean, whose first step was ~13 nats
over budget), so the choice collapses to m = 0. :func:`refinement_points` proposes, per sign:

* inside the measured bracket of the budget crossing (the last measured m whose mean utility
  drop is within δ and the next one, which is not) while it is wider than ``tol``: the fitted
  crossing when it lies more than ``tol`` inside the bracket, else the bracket's midpoint (so
  each round at least halves the bracket, whatever the fit says, until it is ``tol`` wide);
* the fitted end of the linear region, and the chosen m itself, when no measured point lies
  within ``tol`` of them.

With a budget margin (:mod:`unisteer.fit.margin`) the measured and the fitted drop are both
read with the margin added, so the bracket refined is the one of the bound the choice keeps.
Every point comes with its reason. The sweep stops when a round proposes nothing: then the
chosen m has a measured point within ``tol`` and each crossing is bracketed to ``tol``.
This module is pure numpy (it sees fitted curves and measured means, never a model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from unisteer.fit.derive import MultiplierChoice, regions
from unisteer.fit.errors import FitError
from unisteer.fit.margin import DropMargin
from unisteer.fit.result import SweepFit


@dataclass(frozen=True)
class Refinement:
    """One multiplier an adaptive sweep adds, and why."""

    m: float
    reason: str

    def to_dict(self) -> dict[str, float | str]:
        return {"m": self.m, "reason": self.reason}


#: The resolution the chosen m is refined to, as a fraction of the coarse grid's range: a
#: quarter of the spacing of the 21-point grid, however few points the coarse grid has.
RANGE_FRACTION = 1 / 80


def default_tolerance(grid: Sequence[float]) -> float:
    """The resolution the chosen m is refined to: a quarter of the coarse grid's largest
    spacing, or :data:`RANGE_FRACTION` of its range when that is finer (so a coarse grid of
    few points is refined as far as a 21-point one)."""
    x = np.unique(np.asarray(grid, dtype=np.float64))
    if x.size < 2:
        return 1.0
    return float(min(np.max(np.diff(x)) / 4, (x[-1] - x[0]) * RANGE_FRACTION))


def _fitted_crossing(
    fit: SweepFit, u0: float, budget: float, a: float, b: float, margin: DropMargin | None
) -> float | None:
    """A root of the fitted utility drop (plus ``margin``) minus the budget in [a, b], if it
    changes sign."""

    def excess(x: float) -> float:
        extra = 0.0 if margin is None else float(margin(x))
        return u0 - float(fit.utility.predict(x)) + extra - budget

    fa, fb = excess(a), excess(b)
    if not (np.isfinite(fa) and np.isfinite(fb)) or fa * fb > 0:
        return None
    if fa == 0:
        return a
    return float(brentq(excess, a, b, xtol=1e-9 * max(1.0, abs(b - a))))


def refinement_points(
    fit: SweepFit,
    measured_m: Sequence[float],
    measured_util: Sequence[float],
    *,
    max_util_drop: float,
    tol: float,
    choice: MultiplierChoice | None = None,
    margin: DropMargin | None = None,
) -> list[Refinement]:
    """New multipliers to measure (sorted, none within ``tol`` of a measured one or of each
    other), from the current fit, the measured mean UtilOdds per m (``measured_util``; NaN
    where undefined), the current choice and the budget ``margin`` if any; see the module
    docstring."""
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    m = np.asarray(measured_m, dtype=np.float64)
    u = np.asarray(measured_util, dtype=np.float64)
    order = np.argsort(m)
    m, u = m[order], u[order]
    if not np.any(m == 0.0):
        raise ValueError("the measured grid must hold m = 0 (the utility budget is from there)")
    u0 = float(u[m == 0.0][0])
    budget = float(max_util_drop)
    extra = np.zeros(m.size) if margin is None else margin(m)
    out: list[Refinement] = []

    for sign, name in ((1.0, "m > 0"), (-1.0, "m < 0")):
        side = m[sign * m >= 0]
        side_u = u[sign * m >= 0]
        side_extra = extra[sign * m >= 0]
        steps = np.argsort(np.abs(side))  # from 0 outward
        side, side_u, side_extra = side[steps], side_u[steps], side_extra[steps]
        over = [i for i in range(side.size) if not (u0 - side_u[i] + side_extra[i] <= budget)]
        if not over or over[0] == 0:
            continue
        a, b = float(side[over[0] - 1]), float(side[over[0]])  # within budget, then over it
        if abs(b - a) <= tol:
            continue
        lo, hi = min(a, b), max(a, b)
        x = _fitted_crossing(fit, u0, budget, lo, hi, margin)
        if x is not None and min(x - lo, hi - x) > tol:
            out.append(Refinement(x, f"fitted UtilOdds crosses the {budget:g} nat budget ({name})"))
        else:
            out.append(Refinement((a + b) / 2, f"bisects the measured budget crossing ({name})"))

    lo_m, hi_m = float(m.min()), float(m.max())
    try:
        reg = regions(fit)
        for side_regions, name in ((reg.positive, "m > 0"), (reg.negative, "m < 0")):
            x = float(side_regions.linear_end)
            if np.isfinite(x) and lo_m < x < hi_m:
                out.append(Refinement(x, f"preference leaves its linear region ({name})"))
    except FitError:  # an unconverged fit has no regions; the budget points still stand
        pass
    if choice is not None and np.isfinite(choice.m) and choice.m != 0.0:
        out.append(Refinement(float(choice.m), "the chosen m"))

    kept: list[Refinement] = []
    for r in out:
        # a bisection of a bracket wider than tol is tol/2 or more from its ends; any other
        # point is only worth measuring where nothing within tol was measured
        reach = tol / 2 if r.reason.startswith("bisects") else tol
        near_measured = np.min(np.abs(m - r.m)) < reach
        near_kept = any(abs(k.m - r.m) <= tol for k in kept)
        if not near_measured and not near_kept:
            kept.append(Refinement(float(np.round(r.m, 6)), r.reason))
    return sorted(kept, key=lambda r: r.m)
