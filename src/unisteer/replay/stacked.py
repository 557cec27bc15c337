"""The stacked runner: A_p and A_n of every pair as two full rows (prompt included), blocks
L..N replayed on them once per multiplier.

About twice the work of :mod:`unisteer.replay.prefix`, but it needs nothing from the pairs'
structure, it is what the trainer differentiates through, and on the default model it
reproduced the ordinary forward pass bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from unisteer.core.positions import PositionMode
from unisteer.core.steer import steer
from unisteer.core.steering_set import Steerable
from unisteer.replay.base import ReplayInput
from unisteer.replay.logprob import completion_targets, row_nll, token_logprobs
from unisteer.replay.recorder import Call, Recorder, expand_batch


@dataclass
class StackedCapture:
    """Block L's input for full rows and the arguments blocks L..N received."""

    hidden: Tensor
    calls: list[Call]
    predicts: Tensor
    targets: Tensor
    prompt_lengths: Tensor
    base: Tensor  # [2P] NLL sums at m = 0 (the ordinary forward pass)


class StackedRunner:
    """Blocks L..N on full rows ``[p0+, p0-, ...]``, repeated once per multiplier."""

    name = "stacked"

    def __init__(self, model: nn.Module, layer: int, after_site: str | None = None) -> None:
        """Replays blocks ``layer``..N; with ``after_site`` (block ``layer``'s path, see
        :func:`unisteer.core.sites.replay_start`), the deltas there act on that block's
        output, and the replay starts at the next block with them applied to its input."""
        self.after_site = after_site
        self.rec = Recorder(model, layer + 1 if after_site is not None else layer)

    def capture(self, inputs: ReplayInput) -> StackedCapture:
        """One ordinary forward pass over ``inputs.batch`` (no autograd), recording block L's
        input and the calls of blocks L..N; its NLL sums are the capture's ``base``."""
        batch = inputs.batch
        predicts, targets = completion_targets(batch)
        h, calls, logits = self.rec.forward(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
        )
        logp = token_logprobs(logits[predicts], targets)
        return StackedCapture(
            h, calls, predicts, targets, batch.prompt_lengths, row_nll(logp, predicts)
        )

    def run(
        self, cap: StackedCapture, delta: Steerable, ms: Sequence[float], positions: PositionMode
    ) -> Tensor:
        """``[K, 2P]`` NLL sums, one row of the result per multiplier."""
        k, rows = len(ms), cap.hidden.shape[0]
        m_rows = torch.tensor(list(ms), dtype=torch.float32).repeat_interleave(rows)
        prompt = cap.prompt_lengths.repeat(k)
        with (
            torch.no_grad(),
            steer(self.rec.model, delta, m=m_rows, positions=positions, prompt_length=prompt) as s,
            s.calling(rows * k, cap.hidden.shape[1]),
        ):
            h = expand_batch(cap.hidden, rows, k)
            if self.after_site is not None:
                h = s.at_residual(self.after_site, h)
            h = self.rec.blocks_from(h, cap.calls, rows, k)
            predicts = cap.predicts.repeat(k, 1)
            logp = self.rec.logprobs(h[predicts], cap.targets.repeat(k))
        return row_nll(logp, predicts).reshape(k, rows)
