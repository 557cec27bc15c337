"""Multiplier grids: parsing ``"-4:4:21"`` or ``"-1,0,1"`` and the default symmetric grids."""

from __future__ import annotations

import math

import numpy as np

#: The most multipliers one grid may hold (each is a full pass over the pairs' replayed blocks).
MAX_POINTS = 1001


def parse_grid(text: str) -> list[float]:
    """``"lo:hi:n"`` (n evenly spaced points, both ends included) or ``"a,b,c"``; at most
    ``MAX_POINTS`` points."""
    s = text.strip()
    if len(s) > 100_000:
        raise ValueError(f"the multiplier grid is {len(s)} characters long; give LO:HI:N")
    try:
        if ":" in s:
            parts = s.split(":")
            if len(parts) != 3:
                raise ValueError
            lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
            if n < 1 or (n == 1 and lo != hi):
                raise ValueError
            if n > MAX_POINTS:
                raise OverflowError
            values = np.linspace(lo, hi, n).tolist()
        else:
            values = [float(x) for x in s.split(",") if x.strip()]
    except OverflowError:
        raise ValueError(
            f"the multiplier grid {text!r} has more than {MAX_POINTS} points"
        ) from None
    except ValueError:
        raise ValueError(
            f"cannot read the multiplier grid {text!r}: use LO:HI:N (e.g. -4:4:21) or a "
            "comma-separated list (e.g. -1,0,1)"
        ) from None
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"the multiplier grid {text!r} is empty or not finite")
    if len(values) > MAX_POINTS:
        raise ValueError(f"the multiplier grid has {len(values)} points, more than {MAX_POINTS}")
    # Snap the centre of symmetric grids to an exact 0 (linspace can give 1e-16).
    return [0.0 if abs(v) < 1e-12 * max(1.0, max(abs(x) for x in values)) else v for v in values]


def symmetric_grid(limit: float, points: int = 21) -> list[float]:
    """``points`` evenly spaced values on ``[-limit, limit]``; odd ``points`` include 0."""
    if limit <= 0 or not math.isfinite(limit):
        raise ValueError(f"the grid limit must be positive and finite, got {limit}")
    return parse_grid(f"{-limit}:{limit}:{points}")
