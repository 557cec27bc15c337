"""SFT: make the steered model produce the target completion.

With +m the target is A_p; with bidirectional training (the default), -m targets A_n:

    L = mean over rows of  ( -log p_Φ(A_target | q) / |A_target| )

i.e. the token-mean cross-entropy of each target completion, averaged over rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from unisteer.core.delta import Kind
from unisteer.training.objectives.rows import (
    NEG,
    POS,
    Draw,
    Rows,
    Scores,
    side_rows,
    token_mean_nll,
)


def sft_loss(logp: Tensor, tokens: Tensor) -> Tensor:
    """Mean over rows of the token-mean NLL ``-logp / tokens``."""
    return (-logp / tokens.clamp_min(1).to(logp.dtype)).mean()


@dataclass(frozen=True)
class SFT:
    """Options of the SFT objective."""

    bidirectional: bool = True
    name: str = "sft"

    def rows(self, n_pairs: int, draw: Draw, kind: Kind) -> Rows:
        parts = [side_rows(n_pairs, POS, draw(n_pairs))]
        if self.bidirectional:
            parts.append(side_rows(n_pairs, NEG, -draw(n_pairs)))
        return Rows.cat(*parts)

    def loss(self, rows: Rows, scores: Scores) -> Tensor:
        return token_mean_nll(scores).mean()
