"""Mapping a continuous proxy statistic to the 0/1/2 scale with calibrated thresholds.

Every proxy statistic is oriented so that higher is better. It is calibrated on two reference
samples: ``good`` (texts that deserve a 2, e.g. a concept's own positive examples) and ``bad``
(texts that deserve a 0, e.g. negatives). Then

* ``low`` is the threshold that best separates good from bad (Youden's J on the ROC curve:
  the cut maximising true-positive rate minus false-positive rate);
* ``high`` is the ``q_high`` quantile of the good sample (default 0.25: three quarters of the
  good references reach it), and never below ``low``.

A value below ``low`` scores 0, from ``low`` up to ``high`` scores 1, from ``high`` on 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Thresholds:
    """``level(x)``: 0 below ``low``, 1 below ``high``, else 2 (higher is better)."""

    low: float
    high: float

    def level(self, x: float) -> int:
        if not np.isfinite(x):
            return 0
        if x >= self.high:
            return 2
        return 1 if x >= self.low else 0

    def describe(self) -> str:
        return f"0 < {self.low:.4g} <= 1 < {self.high:.4g} <= 2"


def youden_threshold(
    good: Sequence[float] | np.ndarray[Any, Any], bad: Sequence[float] | np.ndarray[Any, Any]
) -> float:
    """The cut ``t`` (predict good when ``x >= t``) maximising TPR − FPR."""
    g = np.asarray(good, dtype=np.float64)
    b = np.asarray(bad, dtype=np.float64)
    g, b = g[np.isfinite(g)], b[np.isfinite(b)]
    if len(g) == 0 or len(b) == 0:
        raise ValueError("calibration needs finite good and bad reference values")
    candidates = np.unique(np.concatenate([g, b]))
    tpr = (g[None, :] >= candidates[:, None]).mean(1)
    fpr = (b[None, :] >= candidates[:, None]).mean(1)
    best = int(np.argmax(tpr - fpr))  # ties: the lowest cut
    return float(candidates[best])


def calibrate(
    good: Sequence[float] | np.ndarray[Any, Any],
    bad: Sequence[float] | np.ndarray[Any, Any],
    q_high: float = 0.25,
) -> Thresholds:
    """Thresholds from good and bad reference values (see the module docstring)."""
    if not 0.0 <= q_high <= 1.0:
        raise ValueError(f"q_high must be in [0, 1], got {q_high}")
    low = youden_threshold(good, bad)
    g = np.asarray(good, dtype=np.float64)
    high = float(np.quantile(g[np.isfinite(g)], q_high))
    return Thresholds(low, max(low, high))
