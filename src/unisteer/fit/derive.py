"""What a user needs from the fits: the linear slope, the three regimes, and the choice of m.

**Linear slope.** Near m = 0, PrefOdds(m) = (α·m + β)·D_p(m) + b_p, so::

    dPref/dm(0±) = α·D_p(0) + β·D_p'(0±),   D_p'(0±) = D_p(0)·2p±·m± / (L± + m±²)

:func:`linear_slope` reports α·D_p(0) (the slope of the linear term, the paper's
"slope α when D ≈ 1"), both one-sided derivatives, and their mean.

**Regions** of the preference curve, per side of 0, from the decay D_p. On the positive side
D_p peaks at m₊ when m₊ ≥ 0 (value 1) and otherwise at m = 0 (value D_p(0)); likewise on the
negative side. With r the fraction of that peak value::

    boundary(r) = m₊ + sqrt(L₊·((r·peak)^(-1/p₊) - 1))     (positive side)
    boundary(r) = m₋ - sqrt(L₋·((r·peak)^(-1/p₋) - 1))     (negative side)

is where D_p has fallen to r·peak going away from 0. The **linear** region runs from 0 to
boundary(0.9) (D_p within 10 % of its peak: PrefOdds is nearly linear in m), the
**transitional** region from boundary(0.9) to boundary(0.5), and the **convergence** region
beyond boundary(0.5) (D_p below half its peak: PrefOdds flattens towards b_p). Boundaries can
lie outside the swept range; they are reported as computed.

**Choice of m.** :func:`choose_multiplier` maximises the fitted PrefOdds (the user wants more
of the concept) over m in the swept range, both signs, subject to
UtilOdds(0) - UtilOdds(m) ≤ δ (fitted curves). It scans a dense grid, then refines around the
best feasible grid point: a bounded scalar maximisation between its neighbours, and a root of
the constraint where a neighbour is infeasible. The answer satisfies the constraint to 1e-9.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.optimize import brentq, minimize_scalar

from unisteer.fit.curves import Array
from unisteer.fit.errors import FitError
from unisteer.fit.margin import POINT_LEVEL, DropMargin
from unisteer.fit.result import CurveFit, SweepFit

Region = Literal["linear", "transitional", "convergence"]
_FEASIBILITY_TOL = 1e-9


def _preference(fit: CurveFit | SweepFit) -> CurveFit:
    pref = fit.preference if isinstance(fit, SweepFit) else fit
    if pref.kind != "preference":
        raise FitError(f"{pref.label}: this needs a preference fit, got a {pref.kind} fit")
    return pref.check()


# -- slope --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinearSlope:
    """Slopes of the fitted PrefOdds at m = 0 (per unit of m)."""

    alpha_d0: float
    left: float
    right: float

    @property
    def slope(self) -> float:
        """The mean of the one-sided derivatives (the central derivative at 0)."""
        return 0.5 * (self.left + self.right)


def linear_slope(fit: CurveFit | SweepFit) -> LinearSlope:
    """α·D_p(0) and dPref/dm at 0⁻ and 0⁺ (see the module docstring)."""
    pref = _preference(fit)
    alpha, beta = pref.params["alpha"], pref.params["beta"]
    d = pref.decay_params
    sides = []
    for m0, lscale, p in (d[0:3], d[3:6]):
        d0 = float((1 + m0 * m0 / lscale) ** (-p))
        sides.append((d0, float(d0 * 2 * p * m0 / (lscale + m0 * m0))))
    (d0_pos, slope_pos), (d0_neg, slope_neg) = sides
    return LinearSlope(
        alpha_d0=float(alpha * d0_pos),
        left=float(alpha * d0_neg + beta * slope_neg),
        right=float(alpha * d0_pos + beta * slope_pos),
    )


# -- regions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SideRegions:
    """Region boundaries on one side of 0 (negative side: negative m values).

    linear: between 0 and ``linear_end``; transitional: between ``linear_end`` and
    ``convergence_start``; convergence: beyond ``convergence_start``.
    """

    side: Literal["positive", "negative"]
    peak_m: float
    peak: float
    linear_end: float
    convergence_start: float


@dataclass(frozen=True)
class Regions:
    """The preference regimes on both sides, at decay fractions ``linear`` and
    ``convergence`` of the peak."""

    positive: SideRegions
    negative: SideRegions
    linear: float
    convergence: float
    m_range: tuple[float, float]

    def region_of(self, m: float) -> Region:
        """Which regime the multiplier ``m`` lies in."""
        side = self.positive if m >= 0 else self.negative
        dist = abs(m)
        if dist < abs(side.linear_end):
            return "linear"
        if dist < abs(side.convergence_start):
            return "transitional"
        return "convergence"

    def to_dict(self) -> dict[str, object]:
        def side(s: SideRegions) -> dict[str, float]:
            return {
                "peak_m": s.peak_m,
                "peak": s.peak,
                "linear_end": s.linear_end,
                "convergence_start": s.convergence_start,
            }

        return {
            "definition": (
                f"per side of 0: linear while D_p >= {self.linear} x its peak on that side, "
                f"transitional down to {self.convergence} x peak, convergence beyond"
            ),
            "positive": side(self.positive),
            "negative": side(self.negative),
            "m_range": list(self.m_range),
        }


def _side(
    sign: float, m0: float, lscale: float, p: float, linear: float, conv: float
) -> SideRegions:
    on_side = sign * m0 >= 0
    peak_m = float(m0) if on_side else 0.0
    log_peak = 0.0 if on_side else -p * float(np.log1p(m0 * m0 / lscale))
    peak = float(np.exp(log_peak))

    def boundary(r: float) -> float:
        # D = r·peak where (1 + (m - m0)²/L)^(-p) = r·peak, solved in logs: for tiny p the
        # power overflows, and the boundary is then beyond any reach (inf).
        x = -(np.log(r) + log_peak) / p
        if x > 700.0:
            return sign * float("inf")
        return float(m0 + sign * np.sqrt(lscale * np.expm1(x)))

    return SideRegions(
        "positive" if sign > 0 else "negative", peak_m, peak, boundary(linear), boundary(conv)
    )


def regions(fit: CurveFit | SweepFit, *, linear: float = 0.9, convergence: float = 0.5) -> Regions:
    """Boundaries of the linear / transitional / convergence regions of preference."""
    if not 0 < convergence < linear < 1:
        raise ValueError(
            f"need 0 < convergence < linear < 1, got linear={linear}, convergence={convergence}"
        )
    pref = _preference(fit)
    d = pref.decay_params
    return Regions(
        _side(1.0, float(d[0]), float(d[1]), float(d[2]), linear, convergence),
        _side(-1.0, float(d[3]), float(d[4]), float(d[5]), linear, convergence),
        linear,
        convergence,
        pref.m_range,
    )


# -- choice of m --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MultiplierChoice:
    """The chosen multiplier and the fitted curves there, relative to m = 0.

    ``pref_gain = pref - pref_at_zero``; ``util_drop = util_at_zero - util`` (≤ max_util_drop).
    ``constraint_active``: the utility budget, not the preference curve, stopped the search.
    ``at_range_edge``: the answer is at the end of the swept range; a wider sweep may do better.
    ``budget_level``: the one-sided confidence of the budget (:mod:`unisteer.fit.margin`; 0.5
    is the fitted drop itself) and ``util_drop_bound`` the bound kept within the budget at m:
    ``util_drop`` plus the margin there (equal to ``util_drop`` at level 0.5).
    """

    m: float
    pref: float
    util: float
    pref_gain: float
    util_drop: float
    pref_at_zero: float
    util_at_zero: float
    max_util_drop: float
    constraint_active: bool
    at_range_edge: bool
    budget_level: float = POINT_LEVEL
    util_drop_bound: float | None = None

    def __post_init__(self) -> None:
        if self.util_drop_bound is None:
            object.__setattr__(self, "util_drop_bound", self.util_drop)

    def to_dict(self) -> dict[str, float | bool]:
        return asdict(self)


def choose_multiplier(
    fit: SweepFit,
    max_util_drop: float = 1.0,
    *,
    m_range: tuple[float, float] | None = None,
    grid_points: int = 2001,
    margin: DropMargin | None = None,
) -> MultiplierChoice:
    """The m in the swept range (or ``m_range``) maximising fitted PrefOdds subject to a
    fitted UtilOdds drop of at most ``max_util_drop`` nats from m = 0; with ``margin``
    (:func:`~unisteer.fit.margin.drop_margin`) the fitted drop plus the margin is kept within
    it instead (a budget that holds with the margin's one-sided confidence)."""
    if not max_util_drop >= 0:
        raise ValueError(f"max_util_drop must be a non-negative number, got {max_util_drop}")
    pref_fit = _preference(fit)
    util_fit = fit.utility.check()
    lo, hi = m_range if m_range is not None else fit.m_range
    if not lo < hi:
        raise FitError(f"empty multiplier range [{lo:g}, {hi:g}]")
    p0 = float(pref_fit.predict(0.0))
    u0 = float(util_fit.predict(0.0))

    def pref(x: float) -> float:
        return float(pref_fit.predict(x))

    def extra(x: npt.ArrayLike) -> Array:
        return np.zeros(np.shape(x)) if margin is None else margin(x)

    def excess(x: float) -> float:
        """Positive where the utility budget is exceeded."""
        return u0 - float(util_fit.predict(x)) + float(extra(x)) - max_util_drop

    grid: Array = np.linspace(lo, hi, max(grid_points, 3))
    if lo <= 0 <= hi:
        grid = np.unique(np.append(grid, 0.0))
    pvals = pref_fit.predict(grid)
    feasible = u0 - util_fit.predict(grid) + extra(grid) - max_util_drop <= _FEASIBILITY_TOL
    if not feasible.any():
        raise FitError(
            f"no multiplier in [{lo:g}, {hi:g}] keeps the fitted UtilOdds within "
            f"{max_util_drop:g} nats of its value at m = 0; include m = 0 in the range or allow "
            "a larger max_util_drop"
        )
    i = int(np.argmax(np.where(feasible, pvals, -np.inf)))
    candidates = [float(grid[i])]
    a, b = float(grid[max(i - 1, 0)]), float(grid[min(i + 1, grid.size - 1)])
    if a < b:
        res = minimize_scalar(
            lambda x: -pref(x),
            bounds=(a, b),
            method="bounded",
            options={"xatol": 1e-10 * max(1.0, hi - lo)},
        )
        candidates.append(float(res.x))
    for j in (i - 1, i + 1):
        if (
            0 <= j < grid.size
            and not feasible[j]
            and excess(float(grid[i])) < 0
            and np.isfinite(excess(float(grid[j])))
        ):
            root = brentq(excess, float(grid[i]), float(grid[j]), xtol=1e-13)
            candidates.append(float(root))
    ok = [x for x in candidates if excess(x) <= _FEASIBILITY_TOL]
    best = max(ok, key=lambda x: (pref(x), -abs(x)))
    util = float(util_fit.predict(best))
    span = hi - lo
    return MultiplierChoice(
        m=best,
        pref=pref(best),
        util=util,
        pref_gain=pref(best) - p0,
        util_drop=u0 - util,
        pref_at_zero=p0,
        util_at_zero=u0,
        max_util_drop=float(max_util_drop),
        constraint_active=bool(abs(excess(best)) <= 1e-6 * max(1.0, max_util_drop)),
        at_range_edge=bool(min(best - lo, hi - best) <= 1e-9 * span),
        budget_level=POINT_LEVEL if margin is None else margin.level,
        util_drop_bound=u0 - util + float(extra(best)),
    )
