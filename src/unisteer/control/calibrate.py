"""``static_kl``: one constant multiplier calibrated on rollouts so that the 95th percentile of
per-token ``KL(steered ‖ unsteered)`` equals ``kappa`` (the existing static calibration idea,
the baseline the adaptive :func:`~unisteer.control.controllers.kl_budget` is compared with).

For each multiplier of a grid on ``[0, m_max]`` the calibration prompts are generated under
``fixed(m)`` with the unsteered model alongside (the ``kl_budget`` loop with one candidate:
:func:`unisteer.control.generate.generate_controlled`), giving the KL of every steered token;
the percentile is interpolated linearly between grid points, and the largest multiplier whose
percentile stays at or below ``kappa`` is chosen (0 when even the first step exceeds it,
``m_max`` when none does). Seeded: the rollouts are greedy unless ``temperature > 0``, then
drawn with ``seed``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from unisteer.control.controllers import Controller, fixed
from unisteer.control.generate import generate_controlled
from unisteer.core.positions import PositionMode
from unisteer.core.steering_set import Steerable
from unisteer.data.conversation import Query


@dataclass(frozen=True)
class Calibration:
    """The chosen ``m``, and per grid multiplier the KL percentile measured."""

    controller: Controller
    m: float
    kappa: float
    grid: tuple[float, ...]
    percentile: tuple[float, ...]
    q: float


def _measured(m: float) -> Controller:
    """One candidate (``m``) with the unsteered row beside it: fixed ``m``, and its KL."""
    return Controller("measured", (float(m),), math.inf)


def kl_profile(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Query],
    delta: Steerable,
    m_max: float,
    *,
    points: int = 9,
    q: float = 95.0,
    positions: PositionMode = "all",
    max_new_tokens: int = 32,
    temperature: float = 0.0,
    seed: int = 0,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(grid, percentile)``: for each multiplier of ``linspace(0, m_max, points)`` the
    ``q``-th percentile of per-token KL of rollouts under it (independent of any kappa, so one
    profile serves a whole kappa sweep)."""
    if not math.isfinite(m_max) or m_max == 0 or points < 2:
        raise ValueError("a KL profile needs a finite m_max != 0 and points >= 2")
    grid = [float(x) for x in np.linspace(0.0, m_max, points)]
    pct = []
    for m in grid:
        if m == 0.0:
            pct.append(0.0)
            continue
        gens = generate_controlled(
            model, tokenizer, prompts, delta, _measured(m), positions=positions,
            max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
        )  # fmt: skip
        kls = [k for g in gens for k, x in zip(g.kl, g.m, strict=True) if x != 0.0]
        pct.append(float(np.percentile(kls, q)) if kls else 0.0)
    return tuple(grid), tuple(pct)


def choose_static(grid: Sequence[float], percentile: Sequence[float], kappa: float) -> float:
    """The multiplier where a KL profile first crosses ``kappa`` (linear between grid points;
    0 if it starts above, the grid's end if it never crosses)."""
    if not kappa >= 0:
        raise ValueError(f"kappa must be >= 0, got {kappa}")
    for j in range(1, len(grid)):
        (m0, p0), (m1, p1) = (grid[j - 1], percentile[j - 1]), (grid[j], percentile[j])
        if p1 > kappa:  # the crossing lies in [m0, m1]
            return m0 + (m1 - m0) * (kappa - p0) / (p1 - p0) if p1 > p0 else m0
    return float(grid[-1])


def static_kl(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Query],
    delta: Steerable,
    kappa: float,
    m_max: float,
    **options: Any,
) -> Calibration:
    """The constant ``m`` in ``[0, m_max]`` whose rollouts' ``q``-th percentile of per-token KL
    is ``kappa`` (see the module docstring); ``.controller`` holds it. ``options`` go to
    :func:`kl_profile` (``points``, ``q``, ``positions``, ``max_new_tokens``, ``temperature``,
    ``seed``)."""
    grid, pct = kl_profile(model, tokenizer, prompts, delta, m_max, **options)
    chosen = choose_static(grid, pct, kappa)
    controller = Controller("static_kl", fixed(chosen).candidates)
    return Calibration(controller, chosen, kappa, grid, pct, float(options.get("q", 95.0)))
