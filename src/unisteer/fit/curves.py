"""The activation-manifold curve model (paper Eqs. 12, 15, 17) as vectorised numpy functions.

Validity decay, two-sided rational quadratic (Eq. 12)::

    D(m) = (1 + (m - m₊)²/L₊)^(-p₊)    for m ≥ 0
    D(m) = (1 + (m - m₋)²/L₋)^(-p₋)    for m < 0

with L± > 0 and p± > 0, so 0 < D(m) ≤ 1, D = 1 exactly at the peak m = m±, and D decreases
monotonically as m moves away from m± on its own side. Continuity at the origin,
D(0⁺) = D(0⁻), is not automatic: it is the equality constraint of the fit.

Preference (Eq. 15) and utility (Eq. 17), each with its own decay parameters::

    PrefOdds(m) = (α·m + β)·D_p(m) + b_p
    UtilOdds(m) = β_u·D_u(m) + b_u

Parameter names used throughout the package: ``m_pos, L_pos, p_pos, m_neg, L_neg, p_neg`` for
the decay; ``alpha, beta, b`` for preference; ``beta, b`` for utility.

Every function also has a Jacobian form (derivatives with respect to the parameters), used by
the optimiser. With u = m - m± and D the decay on that side::

    ∂D/∂m± = D · 2p·u / (L + u²)
    ∂D/∂L±  = D · p·u² / (L·(L + u²))
    ∂D/∂p±  = -D · log(1 + u²/L)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
Kind = Literal["preference", "utility"]

DECAY_NAMES: tuple[str, ...] = ("m_pos", "L_pos", "p_pos", "m_neg", "L_neg", "p_neg")
PREFERENCE_NAMES: tuple[str, ...] = ("alpha", "beta", "b", *DECAY_NAMES)
UTILITY_NAMES: tuple[str, ...] = ("beta", "b", *DECAY_NAMES)


def _side_params(m: Array, d: Array) -> tuple[Array, Array, Array]:
    """Per point: the (m₀, L, p) of the side the point is on (m ≥ 0 → positive side)."""
    pos = m >= 0
    return (
        np.where(pos, d[0], d[3]),
        np.where(pos, d[1], d[4]),
        np.where(pos, d[2], d[5]),
    )


def decay(
    m: npt.ArrayLike,
    m_pos: float,
    L_pos: float,
    p_pos: float,
    m_neg: float,
    L_neg: float,
    p_neg: float,
) -> Array:
    """D(m) of Eq. 12, computed as exp(-p·log1p((m - m±)²/L±)) for accuracy in the tails."""
    x = np.asarray(m, dtype=np.float64)
    d = np.array([m_pos, L_pos, p_pos, m_neg, L_neg, p_neg], dtype=np.float64)
    return decay_theta(x, d)


def decay_theta(m: Array, d: Array) -> Array:
    """D(m) with the six decay parameters as one vector, in :data:`DECAY_NAMES` order."""
    m0, lscale, p = _side_params(m, d)
    u = m - m0
    return np.asarray(np.exp(-p * np.log1p(u * u / lscale)), dtype=np.float64)


def decay_jacobian(m: Array, d: Array) -> tuple[Array, Array]:
    """D(m) and ∂D/∂(decay parameters), shape ``(len(m), 6)``; zero for the other side."""
    m0, lscale, p = _side_params(m, d)
    u = m - m0
    q = lscale + u * u
    value = np.exp(-p * np.log1p(u * u / lscale))
    dm0 = value * 2.0 * p * u / q
    dl = value * p * u * u / (lscale * q)
    dp = -value * np.log1p(u * u / lscale)
    local = np.stack([dm0, dl, dp], axis=1)
    jac = np.zeros((m.shape[0], 6))
    pos = m >= 0
    jac[pos, 0:3] = local[pos]
    jac[~pos, 3:6] = local[~pos]
    return np.asarray(value, dtype=np.float64), jac


def decay_slope(m: npt.ArrayLike, d: Array) -> Array:
    """dD/dm on the side of each point (one-sided at 0: the positive side, m ≥ 0)."""
    x = np.asarray(m, dtype=np.float64)
    m0, lscale, p = _side_params(x, d)
    u = x - m0
    return np.asarray(-decay_theta(x, d) * 2.0 * p * u / (lscale + u * u), dtype=np.float64)


def feature_widths(d: Array) -> tuple[float, float]:
    """The narrowest feature of D on each side, (w₊, w₋): the smaller of the peak's scale √L
    and the half-width at half maximum √(L·(2^{1/p} - 1)) (where D = 1/2). A fit whose width
    is below the grid spacing draws a spike or a cusp the data cannot show; see
    :func:`grid_resolution`."""
    out = []
    for lscale, p in ((d[1], d[2]), (d[4], d[5])):
        # a tiny p overflows 2^{1/p} - 1 to inf, and the peak's scale is then the narrower
        with np.errstate(over="ignore"):
            half = float(np.expm1(np.log(2.0) / p))
        out.append(float(np.sqrt(lscale * min(1.0, half))))
    return out[0], out[1]


def grid_resolution(m: npt.ArrayLike) -> tuple[float, float]:
    """The finest spacing of the distinct multipliers on each side, (h₊, h₋): m ≥ 0 and m ≤ 0
    (0 counts on both sides). A uniform grid gives its spacing; an adaptive sweep's added
    points make it finer where they were added, and :func:`local_spacing` then says whether a
    fitted feature sits where the grid is that fine. A side with fewer than two points takes
    the other's, or the whole range's."""
    x = np.unique(np.asarray(m, dtype=np.float64))
    whole = float(np.min(np.diff(x))) if x.size > 1 else 1.0
    sides = []
    for part in (x[x >= 0], x[x <= 0]):
        sides.append(float(np.min(np.diff(part))) if part.size > 1 else None)
    h_pos = sides[0] if sides[0] is not None else (sides[1] or whole)
    h_neg = sides[1] if sides[1] is not None else (sides[0] or whole)
    return h_pos, h_neg


def local_spacing(m: npt.ArrayLike, at: float) -> float:
    """The gap between the measured multipliers around ``at`` (clipped to the measured range):
    the length of the grid interval that holds it."""
    x = np.unique(np.asarray(m, dtype=np.float64))
    if x.size < 2:
        return float("inf")
    a = float(np.clip(at, x[0], x[-1]))
    i = int(np.clip(np.searchsorted(x, a, side="right"), 1, x.size - 1))
    return float(x[i] - x[i - 1])


def log_decay_at_zero(d: Array) -> tuple[float, float]:
    """(log D(0⁺), log D(0⁻)) = (-p₊·log1p(m₊²/L₊), -p₋·log1p(m₋²/L₋))."""
    return (
        float(-d[2] * np.log1p(d[0] ** 2 / d[1])),
        float(-d[5] * np.log1p(d[3] ** 2 / d[4])),
    )


def continuity_gap(d: Array) -> float:
    """The equality constraint in log form: log D(0⁺) - log D(0⁻) (zero when continuous)."""
    plus, minus = log_decay_at_zero(d)
    return plus - minus


def continuity_gap_gradient(d: Array) -> Array:
    """∂/∂(decay parameters) of :func:`continuity_gap`."""
    grad = np.zeros(6)
    for offset, sign in ((0, 1.0), (3, -1.0)):
        m0, lscale, p = d[offset], d[offset + 1], d[offset + 2]
        q = lscale + m0 * m0
        grad[offset] = sign * (-p * 2.0 * m0 / q)
        grad[offset + 1] = sign * (p * m0 * m0 / (lscale * q))
        grad[offset + 2] = sign * (-np.log1p(m0 * m0 / lscale))
    return grad


def constraint_violation(d: Array) -> float:
    """|D(0⁺) - D(0⁻)|, the number reported with every fit."""
    plus, minus = log_decay_at_zero(d)
    return float(abs(np.exp(plus) - np.exp(minus)))


def preference(
    m: npt.ArrayLike,
    alpha: float,
    beta: float,
    b: float,
    m_pos: float,
    L_pos: float,
    p_pos: float,
    m_neg: float,
    L_neg: float,
    p_neg: float,
) -> Array:
    """PrefOdds(m) = (α·m + β)·D_p(m) + b_p (Eq. 15)."""
    theta = np.array([alpha, beta, b, m_pos, L_pos, p_pos, m_neg, L_neg, p_neg], dtype=np.float64)
    x = np.asarray(m, dtype=np.float64)
    return PREFERENCE.value(np.atleast_1d(x).ravel(), theta).reshape(x.shape)


def utility(
    m: npt.ArrayLike,
    beta: float,
    b: float,
    m_pos: float,
    L_pos: float,
    p_pos: float,
    m_neg: float,
    L_neg: float,
    p_neg: float,
) -> Array:
    """UtilOdds(m) = β_u·D_u(m) + b_u (Eq. 17)."""
    theta = np.array([beta, b, m_pos, L_pos, p_pos, m_neg, L_neg, p_neg], dtype=np.float64)
    x = np.asarray(m, dtype=np.float64)
    return UTILITY.value(np.atleast_1d(x).ravel(), theta).reshape(x.shape)


def _pref_value(m: Array, theta: Array) -> Array:
    amp = theta[0] * m + theta[1]
    return np.asarray(amp * decay_theta(m, theta[3:]) + theta[2], dtype=np.float64)


def _pref_jacobian(m: Array, theta: Array) -> Array:
    dval, djac = decay_jacobian(m, theta[3:])
    amp = theta[0] * m + theta[1]
    return np.column_stack([m * dval, dval, np.ones_like(m), amp[:, None] * djac])


def _util_value(m: Array, theta: Array) -> Array:
    return np.asarray(theta[0] * decay_theta(m, theta[2:]) + theta[1], dtype=np.float64)


def _util_jacobian(m: Array, theta: Array) -> Array:
    dval, djac = decay_jacobian(m, theta[2:])
    return np.column_stack([dval, np.ones_like(m), theta[0] * djac])


@dataclass(frozen=True)
class CurveModel:
    """One of the two curve models, seen by the optimiser as a function of a parameter vector.

    ``linear`` names the parameters the model is linear in (solved by least squares for
    starting points); the decay parameters are the last six entries of ``names``.
    """

    kind: Kind
    names: tuple[str, ...]
    linear: tuple[str, ...]
    _value: Callable[[Array, Array], Array]
    _jacobian: Callable[[Array, Array], Array]

    @property
    def decay_offset(self) -> int:
        return len(self.names) - len(DECAY_NAMES)

    def value(self, m: Array, theta: Array) -> Array:
        return np.asarray(self._value(m, theta), dtype=np.float64)

    def jacobian(self, m: Array, theta: Array) -> Array:
        """∂value/∂theta, shape ``(len(m), len(names))``."""
        return np.asarray(self._jacobian(m, theta), dtype=np.float64)

    def decay_part(self, theta: Array) -> Array:
        return np.asarray(theta[self.decay_offset :], dtype=np.float64)

    def vector(self, params: dict[str, float]) -> Array:
        """Parameters by name → vector in ``names`` order (every name must be present)."""
        missing = [n for n in self.names if n not in params]
        if missing:
            raise KeyError(f"{self.kind} parameters missing: {', '.join(missing)}")
        return np.array([float(params[n]) for n in self.names], dtype=np.float64)


PREFERENCE = CurveModel(
    "preference", PREFERENCE_NAMES, ("alpha", "beta", "b"), _pref_value, _pref_jacobian
)
UTILITY = CurveModel("utility", UTILITY_NAMES, ("beta", "b"), _util_value, _util_jacobian)


def model_for(kind: Kind) -> CurveModel:
    """The :class:`CurveModel` for ``"preference"`` or ``"utility"``."""
    if kind == "preference":
        return PREFERENCE
    if kind == "utility":
        return UTILITY
    raise ValueError(f"unknown curve kind {kind!r}; use 'preference' or 'utility'")


def continuous_m_neg(
    m_pos: float, L_pos: float, p_pos: float, L_neg: float, p_neg: float, *, sign: float = -1.0
) -> float:
    """The m₋ (of the given sign) that makes D continuous at 0 for the other five parameters.

    Solves (1 + m₋²/L₋)^(-p₋) = (1 + m₊²/L₊)^(-p₊):
    m₋ = ±sqrt(L₋·((1 + m₊²/L₊)^(p₊/p₋) - 1)).
    """
    return float(
        np.copysign(np.sqrt(L_neg * ((1 + m_pos**2 / L_pos) ** (p_pos / p_neg) - 1)), sign)
    )
