"""RePS (Wu et al. 2025): reference-free preference steering with a null intervention.

With p the unsteered model, Φ the steered one and Φ⁻ the "null" intervention:

    Δ⁺ = β⁺·log p_Φ(A_p|q)/|A_p| - log p_Φ(A_n|q)/|A_n|,    β⁺ = max(log p(A_n|q) - log p(A_p|q), 1)
    Δ⁻ = β⁻·log p_Φ⁻(A_n|q)/|A_n| - log p_Φ⁻(A_p|q)/|A_p|,  β⁻ = max(log p(A_p|q) - log p(A_n|q), 1)
    L  = -log σ(Δ⁺) - log σ(Δ⁻)        (mean over pairs)

Φ⁻ removes the positive projection on the vector, h - ReLU(h·v)/‖v‖²·v, for a ``vector``;
for ``lora`` and ``local_weight`` it is the delta at -m. Both members of a pair share one m.
The lengths |A| are completion tokens (``normalizer="completion"``, the paper's) or, as in the
reference code, all tokens of the sequence, prompt included (``normalizer="sequence"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torch.nn.functional import logsigmoid

from unisteer.core.delta import Kind
from unisteer.training.objectives.rows import NEG, POS, Draw, Rows, Scores, pick, side_rows

Normalizer = Literal["completion", "sequence"]


def reps_loss(
    logp_pos: Tensor,
    logp_neg: Tensor,
    null_logp_pos: Tensor,
    null_logp_neg: Tensor,
    ref_logp_pos: Tensor,
    ref_logp_neg: Tensor,
    len_pos: Tensor,
    len_neg: Tensor,
) -> Tensor:
    """The RePS loss per pair (all arguments ``[P]``; log-probabilities are sums)."""
    lp, ln = len_pos.to(logp_pos.dtype), len_neg.to(logp_pos.dtype)
    beta_plus = torch.clamp_min(ref_logp_neg - ref_logp_pos, 1.0)
    beta_minus = torch.clamp_min(ref_logp_pos - ref_logp_neg, 1.0)
    d_plus = beta_plus * logp_pos / lp - logp_neg / ln
    d_minus = beta_minus * null_logp_neg / ln - null_logp_pos / lp
    return -logsigmoid(d_plus) - logsigmoid(d_minus)


@dataclass(frozen=True)
class RePS:
    """Options of the RePS objective."""

    normalizer: Normalizer = "completion"
    name: str = "reps"

    def __post_init__(self) -> None:
        if self.normalizer not in ("completion", "sequence"):
            raise ValueError(
                f"RePS normalizer must be 'completion' or 'sequence', got {self.normalizer!r}"
            )

    def rows(self, n_pairs: int, draw: Draw, kind: Kind) -> Rows:
        m = draw(n_pairs)
        steered = [side_rows(n_pairs, POS, m), side_rows(n_pairs, NEG, m)]
        if kind == "vector":
            nulled = [
                side_rows(n_pairs, POS, m, null=True),
                side_rows(n_pairs, NEG, m, null=True),
            ]
        else:
            m_null = -draw(n_pairs)
            nulled = [side_rows(n_pairs, POS, m_null), side_rows(n_pairs, NEG, m_null)]
        return Rows.cat(*steered, *nulled)

    def loss(self, rows: Rows, scores: Scores) -> Tensor:
        n = int(rows.pair.max()) + 1
        first, second = slice(0, 2 * n), slice(2 * n, 4 * n)  # steered rows, then nulled rows

        def part(values: Tensor, block: slice, side: int) -> Tensor:
            sub = Rows(rows.pair[block], rows.side[block], rows.m[block], rows.null[block])
            return pick(values[block], sub, side)

        lengths = scores.tokens if self.normalizer == "completion" else scores.seq_tokens
        per_pair = reps_loss(
            part(scores.logp, first, POS),
            part(scores.logp, first, NEG),
            part(scores.logp, second, POS),
            part(scores.logp, second, NEG),
            scores.ref_logp[:, POS],
            scores.ref_logp[:, NEG],
            part(lengths, first, POS),
            part(lengths, first, NEG),
        )
        return per_pair.mean()
