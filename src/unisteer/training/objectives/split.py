"""SPLIT: a utility term on both completions and a preference hinge between them.

With token-mean losses L_t (target completion) and L_o (the other one) under steering:

    L = λ_p·L_t + λ_n·L_o + γ·ReLU(θ - (L_o - L_t))

At +m the target is A_p; at -m (bidirectional, the default) A_p and A_n swap roles.

Two forms:

* ``"pair"`` (the paper's form, default): one m per pair and direction, both completions at
  that m, the hinge per pair; the loss is the mean over pairs and directions.
* ``"minibatch"`` (the reference code's form): an independent m for every completion; L_t and
  L_o are token means pooled over the minibatch's target and other rows, and the hinge is
  applied once to those two means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from unisteer.core.delta import Kind
from unisteer.training.objectives.rows import NEG, POS, Draw, Rows, Scores, pick, side_rows

SplitForm = Literal["pair", "minibatch"]


def split_loss(
    loss_target: Tensor,
    loss_other: Tensor,
    *,
    lambda_p: float,
    lambda_n: float,
    gamma: float,
    theta: float,
) -> Tensor:
    """``λ_p·L_t + λ_n·L_o + γ·ReLU(θ - (L_o - L_t))``, elementwise."""
    return (
        lambda_p * loss_target
        + lambda_n * loss_other
        + gamma * torch.relu(theta - (loss_other - loss_target))
    )


@dataclass(frozen=True)
class SPLIT:
    """Options of the SPLIT objective (defaults: λ_p = 1, λ_n = 0.5, γ = 5, θ = 0.5)."""

    lambda_p: float = 1.0
    lambda_n: float = 0.5
    gamma: float = 5.0
    theta: float = 0.5
    form: SplitForm = "pair"
    bidirectional: bool = True
    name: str = "split"

    def __post_init__(self) -> None:
        if self.form not in ("pair", "minibatch"):
            raise ValueError(f"SPLIT form must be 'pair' or 'minibatch', got {self.form!r}")

    def _signs(self) -> tuple[float, ...]:
        return (1.0, -1.0) if self.bidirectional else (1.0,)

    def rows(self, n_pairs: int, draw: Draw, kind: Kind) -> Rows:
        parts = []
        for sign in self._signs():
            m_pos = draw(n_pairs)
            m_neg = m_pos if self.form == "pair" else draw(n_pairs)
            parts += [side_rows(n_pairs, POS, sign * m_pos), side_rows(n_pairs, NEG, sign * m_neg)]
        return Rows.cat(*parts)

    def loss(self, rows: Rows, scores: Scores) -> Tensor:
        nll = -scores.logp
        tokens = scores.tokens.to(nll.dtype).clamp_min(1)
        hp = {
            "lambda_p": self.lambda_p,
            "lambda_n": self.lambda_n,
            "gamma": self.gamma,
            "theta": self.theta,
        }
        target_side = torch.where(rows.m >= 0, POS, NEG)
        is_target = rows.side == target_side
        if self.form == "minibatch":
            l_t = nll[is_target].sum() / tokens[is_target].sum()
            l_o = nll[~is_target].sum() / tokens[~is_target].sum()
            return split_loss(l_t, l_o, **hp)
        n = int(rows.pair.max()) + 1
        terms = []
        for d, sign in enumerate(self._signs()):
            block = slice(2 * n * d, 2 * n * (d + 1))  # rows of this direction, as built above
            sub = Rows(rows.pair[block], rows.side[block], rows.m[block], rows.null[block])
            mean = nll[block] / tokens[block]
            l_p, l_n = pick(mean, sub, POS), pick(mean, sub, NEG)
            l_t, l_o = (l_p, l_n) if sign > 0 else (l_n, l_p)
            terms.append(split_loss(l_t, l_o, **hp))
        return torch.cat(terms).mean()
