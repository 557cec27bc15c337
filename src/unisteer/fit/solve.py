"""Least squares with SLSQP from many seeded starts, under the continuity constraint.

The problem solved for a curve model f(m; θ) and points (mᵢ, yᵢ)::

    minimise    Σᵢ (f(mᵢ; θ) - yᵢ)²
    subject to  log D(0⁺) = log D(0⁻)       (⇔ D(0⁺) = D(0⁻), Eq. 12 continuous at 0)
                L± ≥ 1e-6·M²,  p± ≥ 1e-6    (L > 0, p > 0)
                L± ≥ h±²,  L±·(2^{1/p±} - 1) ≥ h±²   (given ``min_width = (h₊, h₋)``)

**Resolution.** With ``min_width`` (:func:`~unisteer.fit.curves.grid_resolution` of the
multipliers: the coarsest grid spacing on each side), no side of the decay may have its peak
scale √L or its half-width below that spacing (:func:`~unisteer.fit.curves.feature_widths`):
a spike or cusp narrower than the gap between two points is a feature the data cannot support
(the issue's DiffMean spike between two grid points). ``Solution.at_resolution`` says which
sides ended on that bound, i.e. where the data pull the curve narrower than the grid resolves.

**Scaling.** The optimiser works on a standardised copy: m̃ = m/M with M = max|m|, and
ỹ = (y - ȳ)/s_y. The model keeps its form under this map (m± = M·m̃±, L± = M²·L̃±,
α = s_y·α̃/M, β = s_y·β̃, b = ȳ + s_y·b̃, p unchanged), and the objective becomes
mean(residual²)/var(y) = 1 - R², so tolerances mean the same thing for every data set.

**Bounds** (standardised units): m̃± ∈ [-5, 5], L̃± ∈ [1e-6, 1e4], p± ∈ [1e-6, 100], linear
parameters ∈ [-1e6, 1e6]. They are wide; they only keep the optimiser out of degenerate
regions (for instance L → ∞ with p/L fixed, where the decay becomes Gaussian).

**Starts.** Start 0 is symmetric (m̃± = ±0.1, L̃ = 1/4, p = 1; m± = 0 exactly would make the
constraint's gradient vanish, which SLSQP cannot handle); the others are a Latin hypercube
(seeded) over m̃₊ ∈ [-0.5, 1], log₁₀ L̃± ∈ [-2, 1], log₁₀ p± ∈ [-0.5, 1.3] and the sign of m₋,
with |m̃₋| then set so that the start is continuous at 0. Given the decay parameters the
model is linear in (α, β, b) or (β_u, b_u); those come from ordinary least squares. Extra
``warm`` starts (e.g. a previous fit) go first.

**Choice.** A start has converged when SLSQP reports success and the constraint holds to
1e-9 (log scale). The converged start with the smallest objective wins (ties: the earliest).
If none converged, the best attempt is returned with ``converged = False``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.stats import qmc

from unisteer.fit.curves import (
    Array,
    CurveModel,
    continuity_gap,
    continuity_gap_gradient,
    decay_theta,
)

CONSTRAINT_TOL = 1e-9
L_MIN = 1e-6
P_MIN = 1e-6
_M_BOUND = 5.0
_L_MAX = 1e4
_P_MAX = 100.0
_LIN_BOUND = 1e6
_MAXITER = 500
_FTOL = 1e-10


@dataclass(frozen=True, eq=False)
class Solution:
    """Best parameters (original units) and how the search went."""

    theta: Array
    converged: bool
    status: int
    message: str
    n_starts: int
    n_converged: int
    at_resolution: tuple[bool, bool] = (False, False)


@dataclass(frozen=True)
class _Scale:
    """The affine map θ = shift + factor·θ̃ between standardised and original parameters."""

    factor: Array
    shift: Array

    @classmethod
    def of(cls, model: CurveModel, m: Array, y: Array) -> _Scale:
        big_m = float(np.max(np.abs(m)))
        sy = float(np.std(y))
        cy = float(np.mean(y))
        decay = [big_m, big_m**2, 1.0, big_m, big_m**2, 1.0]
        if model.kind == "preference":
            factor = [sy / big_m, sy, sy, *decay]
            shift = [0.0, 0.0, cy] + [0.0] * 6
        else:
            factor = [sy, sy, *decay]
            shift = [0.0, cy] + [0.0] * 6
        return cls(np.array(factor), np.array(shift))

    def to_original(self, theta_s: Array) -> Array:
        return np.asarray(self.shift + self.factor * theta_s, dtype=np.float64)

    def to_scaled(self, theta: Array) -> Array:
        return np.asarray((theta - self.shift) / self.factor, dtype=np.float64)


def _bounds(
    model: CurveModel, l_min: tuple[float, float] = (L_MIN, L_MIN)
) -> list[tuple[float, float]]:
    """Box bounds (standardised units); ``l_min`` is (L̃₊, L̃₋)'s lower bound."""
    sides = [[(-_M_BOUND, _M_BOUND), (lo, _L_MAX), (P_MIN, _P_MAX)] for lo in l_min]
    return [(-_LIN_BOUND, _LIN_BOUND)] * model.decay_offset + sides[0] + sides[1]


def _width_slack(t: Array, k: int, h2: tuple[float, float]) -> Array:
    """log(L·(2^{1/p} - 1)) - log h² per side (≥ 0 when the half-width is resolved)."""
    out = []
    for j, hh in zip((k, k + 3), h2, strict=True):
        out.append(np.log(t[j + 1]) + np.log(np.expm1(np.log(2.0) / t[j + 2])) - np.log(hh))
    return np.array(out)


def _width_slack_jacobian(t: Array, k: int) -> Array:
    jac = np.zeros((2, t.size))
    for row, j in enumerate((k, k + 3)):
        p = t[j + 2]
        e = np.log(2.0) / p
        jac[row, j + 1] = 1.0 / t[j + 1]
        jac[row, j + 2] = -e / p * np.exp(e) / np.expm1(e)
    return jac


def _linear_fit(model: CurveModel, m: Array, y: Array, d: Array) -> Array:
    """Given decay parameters d, the least-squares linear parameters, then θ = (linear, d)."""
    dv = decay_theta(m, d)
    cols = [m * dv, dv, np.ones_like(m)] if model.kind == "preference" else [dv, np.ones_like(m)]
    lin, *_ = np.linalg.lstsq(np.column_stack(cols), y, rcond=None)
    lin = np.clip(lin, -_LIN_BOUND, _LIN_BOUND)
    return np.concatenate([lin, d])


def _starts(model: CurveModel, m: Array, y: Array, n: int, seed: int) -> list[Array]:
    """Standardised starting vectors (see the module docstring)."""
    decays = [np.array([0.1, 0.25, 1.0, -0.1, 0.25, 1.0])]
    if n > 1:
        u = qmc.LatinHypercube(d=6, seed=np.random.default_rng(seed)).random(n - 1)
        for row in u:
            m_pos = -0.5 + 1.5 * row[0]
            l_pos, l_neg = 10 ** (-2 + 3 * row[1]), 10 ** (-2 + 3 * row[3])
            p_pos, p_neg = 10 ** (-0.5 + 1.8 * row[2]), 10 ** (-0.5 + 1.8 * row[4])
            d0 = (1 + m_pos**2 / l_pos) ** (-p_pos)
            size = np.sqrt(l_neg * (d0 ** (-1 / p_neg) - 1))
            m_neg = float(np.clip((-1 if row[5] < 2 / 3 else 1) * size, -_M_BOUND, _M_BOUND))
            decays.append(np.array([m_pos, l_pos, p_pos, m_neg, l_neg, p_neg]))
    return [_linear_fit(model, m, y, d) for d in decays[:n]]


def solve(
    model: CurveModel,
    m: Array,
    y: Array,
    *,
    n_starts: int = 16,
    seed: int = 0,
    warm: Sequence[Array] = (),
    min_width: tuple[float, float] | None = None,
) -> Solution:
    """Fit ``model`` to (m, y) from ``len(warm) + n_starts`` starts; see the module docstring."""
    if n_starts < 1:
        raise ValueError(f"n_starts must be at least 1, got {n_starts}")
    scale = _Scale.of(model, m, y)
    ms = m / float(np.max(np.abs(m)))
    ys = (y - float(np.mean(y))) / float(np.std(y))
    n = ms.size
    k = model.decay_offset
    big_m = float(np.max(np.abs(m)))
    h2 = (
        (0.0, 0.0)
        if min_width is None
        else ((min_width[0] / big_m) ** 2, (min_width[1] / big_m) ** 2)
    )
    bounds = _bounds(model, (max(L_MIN, h2[0]), max(L_MIN, h2[1])))
    lo, hi = np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])

    cache: dict[bytes, Array] = {}

    def residual(t: Array) -> Array:
        key = t.tobytes()
        if key not in cache:
            cache.clear()
            cache[key] = model.value(ms, t) - ys
        return cache[key]

    def objective(t: Array) -> float:
        r = residual(t)
        return float(r @ r) / n

    def gradient(t: Array) -> Array:
        return np.asarray(2.0 * (residual(t) @ model.jacobian(ms, t)) / n, dtype=np.float64)

    def gap(t: Array) -> float:
        return continuity_gap(t[k:])

    def gap_grad(t: Array) -> Array:
        g = np.zeros_like(t)
        g[k:] = continuity_gap_gradient(t[k:])
        return g

    constraints: list[dict[str, object]] = [{"type": "eq", "fun": gap, "jac": gap_grad}]
    if min_width is not None:
        constraints.append(
            {
                "type": "ineq",
                "fun": lambda t: _width_slack(t, k, h2),
                "jac": lambda t: _width_slack_jacobian(t, k),
            }
        )

    def feasible(t: Array) -> bool:
        return min_width is None or bool(np.all(_width_slack(t, k, h2) >= -1e-6))

    starts = [np.clip(scale.to_scaled(w), lo, hi) for w in warm]
    starts += [np.clip(t, lo, hi) for t in _starts(model, ms, ys, n_starts, seed)]

    best: tuple[float, int, Array] | None = None
    fallback: tuple[float, int, Array, int, str] | None = None
    messages: Counter[str] = Counter()
    n_ok = 0
    with np.errstate(all="ignore"):
        for i, x0 in enumerate(starts):
            res = minimize(
                objective,
                x0,
                jac=gradient,
                method="SLSQP",
                bounds=bounds,
                constraints=constraints,
                options={"maxiter": _MAXITER, "ftol": _FTOL},
            )
            x = np.asarray(res.x, dtype=np.float64)
            f = objective(x)
            g = abs(gap(x))
            messages[str(res.message)] += 1
            if not np.isfinite(f) or not np.all(np.isfinite(x)):
                continue
            if bool(res.success) and g <= CONSTRAINT_TOL and feasible(x):
                n_ok += 1
                if best is None or f < best[0]:
                    best = (f, i, x)
            penalised = f + g
            if fallback is None or penalised < fallback[0]:
                fallback = (penalised, i, x, int(res.status), str(res.message))
    total = len(starts)
    if best is not None:
        at_bound = (False, False)
        if min_width is not None:
            slack = _width_slack(best[2], k, h2)
            l_at = (best[2][k + 1] <= 1.01 * h2[0], best[2][k + 4] <= 1.01 * h2[1])
            at_bound = (bool(slack[0] <= 0.02 or l_at[0]), bool(slack[1] <= 0.02 or l_at[1]))
        return Solution(
            scale.to_original(best[2]),
            True,
            0,
            f"{n_ok} of {total} starts converged; best is start {best[1]}",
            total,
            n_ok,
            at_bound,
        )
    said = "; ".join(f"{msg!r} ×{c}" for msg, c in messages.most_common())
    if fallback is None:
        theta = scale.to_original(starts[0])
        return Solution(theta, False, -1, f"no start gave a finite result ({said})", total, 0)
    return Solution(
        scale.to_original(fallback[2]),
        False,
        fallback[3],
        f"none of {total} starts converged (SLSQP said: {said}); showing the best attempt, "
        f"start {fallback[1]}",
        total,
        0,
    )
