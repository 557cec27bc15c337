"""Preference and utility log-odds from completion losses, computed stably.

For a pair, with L_p = -log P(A_p | q) and L_n = -log P(A_n | q):

    PrefOdds = L_n - L_p
    UtilOdds = log P_u - log(1 - P_u),    P_u = e^{-L_p} + e^{-L_n}

``log P_u`` is ``logaddexp(-L_p, -L_n)`` and ``log(1 - P_u)`` is ``log1mexp(log P_u)``. When
P_u >= 1 (possible with token-mean losses, or when one completion is a prefix of the other)
UtilOdds is undefined: the point is flagged ``util_in_domain = False`` and its UtilOdds is NaN,
and every summary counts such points instead of averaging them.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
_LOG_HALF = -math.log(2.0)


def log1mexp(x: npt.ArrayLike) -> Array:
    """``log(1 - exp(x))`` for ``x < 0``, accurate near 0 and for large ``|x|``; NaN for x >= 0.

    Uses ``log(-expm1(x))`` for x > -log 2 and ``log1p(-exp(x))`` otherwise (Mächler 2012).
    """
    a = np.asarray(x, dtype=np.float64)
    out = np.full(a.shape, np.nan)
    neg = a < 0
    near = neg & (a > _LOG_HALF)
    far = neg & ~near
    with np.errstate(divide="ignore"):
        out[near] = np.log(-np.expm1(a[near]))
        out[far] = np.log1p(-np.exp(a[far]))
    return out


def pref_odds(loss_pos: npt.ArrayLike, loss_neg: npt.ArrayLike) -> Array:
    """``L_n - L_p``: positive when the model prefers A_p."""
    return np.asarray(loss_neg, dtype=np.float64) - np.asarray(loss_pos, dtype=np.float64)


def util_odds(
    loss_pos: npt.ArrayLike, loss_neg: npt.ArrayLike
) -> tuple[Array, npt.NDArray[np.bool_]]:
    """``(UtilOdds, in_domain)``; UtilOdds is NaN exactly where ``in_domain`` is False."""
    lp = np.asarray(loss_pos, dtype=np.float64)
    ln = np.asarray(loss_neg, dtype=np.float64)
    log_pu = np.logaddexp(-lp, -ln)
    in_domain = np.isfinite(log_pu) & (log_pu < 0)
    out = np.full(log_pu.shape, np.nan)
    out[in_domain] = log_pu[in_domain] - log1mexp(log_pu[in_domain])
    return out, in_domain
