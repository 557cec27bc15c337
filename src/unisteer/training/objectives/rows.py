"""What one training step runs, and what the loss gets back: the contract between objectives
and the trainer.

An objective turns a minibatch of P pairs into *rows*: each row is one completion of one pair
(A_p or A_n) run under one intervention (``m·delta`` or, for vectors, the null intervention).
The trainer runs the rows through the steered model and hands back, per row, the summed
log-probability of the completion; the objective turns those into a scalar loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

#: Draws ``n`` multipliers (a float32 ``[n]`` tensor) for the current step.
Draw = Callable[[int], Tensor]

POS, NEG = 0, 1  # the two sides of a pair


@dataclass(frozen=True)
class Rows:
    """The rows of one step: row ``r`` is side ``side[r]`` of pair ``pair[r]``.

    ``m[r]`` multiplies the delta (``"add"``); rows with ``null[r]`` instead get the null
    intervention (vector only) and have ``m[r] == 0``.
    """

    pair: Tensor  # [R] long
    side: Tensor  # [R] long: POS or NEG
    m: Tensor  # [R] float32
    null: Tensor  # [R] bool

    def __len__(self) -> int:
        return int(self.pair.numel())

    def take(self, part: slice) -> Rows:
        """Rows ``part`` of these rows (a contiguous slice), in order."""
        return Rows(self.pair[part], self.side[part], self.m[part], self.null[part])

    @staticmethod
    def cat(*parts: Rows) -> Rows:
        return Rows(
            torch.cat([p.pair for p in parts]),
            torch.cat([p.side for p in parts]),
            torch.cat([p.m for p in parts]),
            torch.cat([p.null for p in parts]),
        )


def side_rows(n_pairs: int, side: int, m: Tensor, *, null: bool = False) -> Rows:
    """One row per pair, all on ``side``, with multipliers ``m`` (or the null intervention)."""
    pair = torch.arange(n_pairs)
    return Rows(
        pair,
        torch.full((n_pairs,), side, dtype=torch.long),
        torch.zeros(n_pairs) if null else m.to(torch.float32),
        torch.full((n_pairs,), null, dtype=torch.bool),
    )


@dataclass(frozen=True)
class Scores:
    """What the steered forward pass gives the loss.

    Attributes:
        logp: ``[R]`` summed log-probability of each row's completion (differentiable).
        tokens: ``[R]`` completion tokens of each row (the loss's token count).
        seq_tokens: ``[R]`` tokens of the whole sequence (prompt + completion).
        ref_logp: ``[P, 2]`` the unsteered model's summed log-probabilities of (A_p, A_n).
    """

    logp: Tensor
    tokens: Tensor
    seq_tokens: Tensor
    ref_logp: Tensor


def token_mean_nll(scores: Scores) -> Tensor:
    """``[R]`` per-row mean negative log-likelihood over completion tokens."""
    return -scores.logp / scores.tokens.clamp_min(1).to(scores.logp.dtype)


def pick(values: Tensor, rows: Rows, side: int, *, null: bool | None = None) -> Tensor:
    """Values of the rows on ``side`` (optionally only null / non-null rows), in pair order.

    Each selected pair must appear exactly once.
    """
    keep = rows.side == side
    if null is not None:
        keep = keep & (rows.null == null)
    idx = keep.nonzero()[:, 0]
    order = torch.argsort(rows.pair[idx])
    return values[idx[order]]
