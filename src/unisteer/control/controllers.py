"""Controllers: the multiplier ``m_t`` chosen at each steered forward call (arXiv 2602.02343
evaluates fixed multipliers and leaves adaptive ones open, §7, open question 3).

A controller names its *candidates*, the multipliers evaluated as rows of one forward call,
and, from the next-token log-probabilities of those rows and (when it asks for one) of the
unsteered model on the same prefix, *chooses* one candidate per prompt. Pure functions of the
tensors they are given: no model, no hooks, no state across calls, so a choice depends only
on what the model produced so far.

* :func:`fixed` ``(m)``: one candidate, ``m``: today's behaviour, the baseline.
* :func:`kl_budget` ``(kappa, m_max, k)``: candidates ``linspace(0, m_max, k)``; the largest
  whose next-token ``KL(steered ‖ unsteered) <= kappa``. The unsteered row is shared by the
  candidates, so a step costs ``k + 1`` rows instead of one. ``kappa = 0`` keeps the model
  unsteered bit for bit (the ``m = 0`` candidate's distribution equals the unsteered one
  exactly, so its KL is 0 and every other one's is above it); ``kappa = inf`` is ``fixed(m_max)``.
* :func:`unisteer.control.calibrate.static_kl` ``(kappa)``: one constant ``m`` calibrated on
  rollouts so that the 95th percentile of per-token KL is ``kappa`` (a :func:`fixed`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def kl_divergence(logp: Tensor, ref: Tensor) -> Tensor:
    """``KL(p ‖ q)`` over the last axis from log-probabilities (float64), 0 exactly where the
    two are equal."""
    p, q = logp.double(), ref.double()
    return (p.exp() * (p - q)).sum(-1).clamp_min(0.0)


def log_probs(logits: Tensor) -> Tensor:
    """Next-token log-probabilities in float64 (what controllers compare)."""
    return torch.log_softmax(logits.double(), dim=-1)


@dataclass(frozen=True)
class Controller:
    """``candidates`` evaluated at each steered call; ``choose`` picks one per prompt.

    ``kappa`` is the KL budget (``None`` for a fixed multiplier); ``needs_reference`` says
    whether the unsteered model's distribution is computed beside the candidates.
    """

    name: str
    candidates: tuple[float, ...]
    kappa: float | None = None

    @property
    def needs_reference(self) -> bool:
        return self.kappa is not None

    @property
    def rows(self) -> int:
        """Rows per prompt of a steered call: the candidates, and the unsteered one if asked."""
        return len(self.candidates) + int(self.needs_reference)

    def choose(self, candidates: Tensor, reference: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(index [B], kl [B])``: for each prompt the chosen candidate and its KL to the
        unsteered distribution (NaN without a reference). ``candidates``: ``[B, K, V]``
        log-probabilities; ``reference``: ``[B, V]``."""
        b = candidates.shape[0]
        if reference is None or self.kappa is None:
            return torch.zeros(b, dtype=torch.long), torch.full((b,), math.nan)
        kl = kl_divergence(candidates, reference[:, None, :])  # [B, K]
        within = kl <= self.kappa
        within[:, 0] |= True  # the smallest candidate is the fallback (m = 0 for kl_budget)
        k = candidates.shape[1]
        last = torch.where(within, torch.arange(k), torch.full_like(within, -1, dtype=torch.long))
        index = last.max(dim=1).values
        return index, kl.gather(1, index[:, None])[:, 0]

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "candidates": list(self.candidates), "kappa": self.kappa}


def fixed(m: float) -> Controller:
    """The multiplier ``m`` at every steered position (``generate``'s behaviour)."""
    if not math.isfinite(m):
        raise ValueError(f"m must be finite, got {m}")
    return Controller("fixed", (float(m),))


def kl_budget(kappa: float, m_max: float, k: int = 8) -> Controller:
    """The largest of ``k`` candidates in ``[0, m_max]`` (``0`` and ``m_max`` included) whose
    next-token ``KL(steered ‖ unsteered)`` is at most ``kappa`` nats; ``m_max`` may be
    negative (the candidates then run from 0 down to it)."""
    if not (kappa >= 0):
        raise ValueError(f"kappa must be >= 0 (inf allowed), got {kappa}")
    if not math.isfinite(m_max) or m_max == 0:
        raise ValueError(f"m_max must be finite and not 0, got {m_max}")
    if k < 2:
        raise ValueError(f"kl_budget needs k >= 2 candidates (0 and m_max), got {k}")
    grid = tuple(float(x) for x in torch.linspace(0.0, float(m_max), k, dtype=torch.float64))
    return Controller("kl_budget", grid, float(kappa))
