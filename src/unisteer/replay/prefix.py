"""The prefix runner: what sequences share runs once per multiplier, through the KV cache.

Three stages: the start common to the whole batch (a chat template's system turn), each
pair's prompt with the start its two completions have in common, then the two continuations.
Each stage's input to the first replayed block is cut from the ordinary forward pass's, so
only the replayed blocks are computed in another order than in a plain ``model(...)`` call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from unisteer.core.positions import PositionMode
from unisteer.core.steer import steer
from unisteer.core.steering_set import Steerable
from unisteer.data.tokens import Encoded
from unisteer.model.config import accepts_logits_to_keep, cache_keyword
from unisteer.replay.base import ReplayInput
from unisteer.replay.logprob import row_nll
from unisteer.replay.recorder import Call, Recorder, expand_batch


@dataclass
class PrefixCapture:
    """Each stage's input to block L and the arguments blocks L..N received in it."""

    common_hidden: Tensor | None  # [1, C, d] the start every sequence of the batch shares
    common_calls: list[Call]
    prompt_hidden: Tensor  # [P, S, d] each pair's shared start after it, left-padded
    prompt_calls: list[Call]
    prompt_columns: Tensor  # [P] the column where each row's completion starts
    shared_predicts: Tensor  # [P, S] positions predicting a completion token of the shared start
    shared_targets: Tensor  # flat tokens predicted there
    comp_hidden: Tensor  # [2P, Tc, d], continuations right-padded
    comp_calls: list[Call]
    first_targets: Tensor  # [2P] first token of each continuation
    comp_predicts: Tensor  # [2P, Tc] positions (in the continuation) predicting a token
    comp_targets: Tensor  # flat tokens predicted there
    base: Tensor  # [2P] NLL sums at m = 0 (blocks L..N unsteered, on the same inputs)

    @property
    def common_length(self) -> int:
        return 0 if self.common_hidden is None else int(self.common_hidden.shape[1])


def _prompts_agree(pair: tuple[Encoded, Encoded]) -> bool:
    a, b = pair
    return (
        a.prompt_length == b.prompt_length
        and a.input_ids[: a.prompt_length] == b.input_ids[: b.prompt_length]
    )


def shared_start(pair: tuple[Encoded, Encoded]) -> int:
    """Length of the token prefix A_p and A_n share (the prompt and the longest common start
    of the two completions), leaving each completion at least one token of its own."""
    a, b = pair
    k = a.prompt_length
    limit = min(len(a.input_ids), len(b.input_ids)) - 1
    while k < limit and a.input_ids[k] == b.input_ids[k]:
        k += 1
    return k


def common_start(encoded: Sequence[tuple[Encoded, Encoded]]) -> int:
    """Length of the prompt prefix every pair shares (e.g. a chat template's system turn),
    leaving each prompt at least one token of its own."""
    first = encoded[0][0].input_ids
    limit = min(e[0].prompt_length for e in encoded) - 1
    k = 0
    while k < limit and all(e[0].input_ids[k] == first[k] for e in encoded):
        k += 1
    return k


class PrefixRunner:
    """Runs what sequences share only once, through the KV cache, in three stages: the start
    common to the whole batch (a chat template's system turn), then each pair's shared start
    (its prompt and the common start of its two completions), then the two continuations.
    """

    name = "prefix"

    def __init__(self, model: nn.Module, layer: int, after_site: str | None = None) -> None:
        """As :class:`StackedRunner`."""
        self.after_site = after_site
        self.rec = Recorder(model, layer + 1 if after_site is not None else layer)
        self.cache_kw = cache_keyword(model)
        # The staged pass only records arguments: skip the unembedding where the model can.
        self.no_logits: dict[str, Any] = (
            {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
        )

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=getattr(self.rec.model, "config", None))

    def capture(self, inputs: ReplayInput) -> PrefixCapture | None:
        """The three stages' inputs to block L and the arguments blocks L..N receive.

        ``inputs.hidden`` is block L's input in the ordinary forward pass over the same pairs
        (rows ``[p0+, p0-, p1+, ...]``, right-padded, as :func:`unisteer.data.tokens.pair_batch`
        lays them out); when it is ``None`` it is computed here with
        :meth:`Recorder.block_input`. The stages take their block-L inputs
        from it rather than from their own pass: the blocks before L are then the very
        computation the ordinary forward pass does, and only blocks L..N are computed in
        another order (by stage, through the KV cache), which halves the float32 rounding
        difference between the two. The staged pass is run only to record the arguments.
        Returns ``None`` when some pair's two rows have different prompt tokens.
        """
        encoded, pad = inputs.encoded, inputs.pad
        if not all(_prompts_agree(e) for e in encoded):
            return None
        hidden = inputs.hidden
        if hidden is None:
            hidden = self.rec.block_input(
                input_ids=inputs.batch.input_ids, attention_mask=inputs.batch.attention_mask
            )
        n = len(encoded)
        c = common_start(encoded)
        cuts = [shared_start(e) for e in encoded]
        starts = [e[0].input_ids[c:k] for e, k in zip(encoded, cuts, strict=True)]
        tp = max(len(x) for x in starts)
        p_ids = torch.full((n, tp), pad, dtype=torch.long)
        p_mask = torch.zeros((n, tp), dtype=torch.long)
        for i, x in enumerate(starts):
            p_ids[i, tp - len(x) :] = torch.tensor(x)
            p_mask[i, tp - len(x) :] = 1
        # Columns count from the start of the common part: [common][pads][own start].
        columns = torch.tensor(
            [c + tp - len(x) + e[0].prompt_length - c for e, x in zip(encoded, starts, strict=True)]
        )
        # Position j of the own start predicts token j + 1: a completion token when its column
        # c + j + 1 is at least the row's completion column and j + 1 < tp.
        nxt = c + torch.arange(1, tp + 1)[None, :]
        shared_predicts = (nxt >= columns[:, None]) & (nxt < c + tp)
        shared_targets = p_ids[:, 1:][shared_predicts[:, :-1]]
        comps = [e.input_ids[k:] for pair, k in zip(encoded, cuts, strict=True) for e in pair]
        tc = max(len(x) for x in comps)
        c_ids = torch.full((2 * n, tc), pad, dtype=torch.long)
        c_mask = torch.zeros((2 * n, tc), dtype=torch.long)
        for r, x in enumerate(comps):
            c_ids[r, : len(x)] = torch.tensor(x)
            c_mask[r, : len(x)] = 1
        # Which entries of each stage's block-L input are real tokens, and where in ``hidden``
        # they come from; pads keep the staged pass's own values (they are masked out as keys
        # and their outputs are never read).
        p_rows, p_cols, p_src = [], [], []
        c_rows, c_cols, c_src_r, c_src_t = [], [], [], []
        for i, (pair, k) in enumerate(zip(encoded, cuts, strict=True)):
            p_rows += [i] * (k - c)
            p_cols += list(range(tp - (k - c), tp))
            p_src += list(range(c, k))
            for j, e in enumerate(pair):
                length = len(e.input_ids) - k
                c_rows += [2 * i + j] * length
                c_cols += list(range(length))
                c_src_r += [2 * i + j] * length
                c_src_t += list(range(k, len(e.input_ids)))
        src_rows = torch.tensor([2 * i for i in p_rows], dtype=torch.long)

        def prompt_input(own: Tensor) -> Tensor:
            out = own.clone()
            out[p_rows, p_cols] = hidden[src_rows, p_src].to(out.dtype)
            return out

        def comp_input(own: Tensor) -> Tensor:
            out = own.clone()
            out[c_rows, c_cols] = hidden[c_src_r, c_src_t].to(out.dtype)
            return out

        cache = self._new_cache()
        common_hidden: Tensor | None = None
        common_calls: list[Call] = []
        if c > 0:
            common_hidden, common_calls, _ = self.rec.forward_from(
                lambda own: hidden[:1, :c].to(own.dtype).clone(),
                input_ids=torch.tensor([encoded[0][0].input_ids[:c]]),
                attention_mask=torch.ones((1, c), dtype=torch.long),
                position_ids=torch.arange(c)[None, :],
                use_cache=True,
                **{self.cache_kw: cache},
                **self.no_logits,
            )
            cache.batch_repeat_interleave(n)
        before = torch.ones((n, c), dtype=torch.long)
        p_pos = c + (p_mask.cumsum(-1) - 1).clamp(min=0)
        ph, pcalls, p_last = self.rec.forward_from(
            prompt_input,
            input_ids=p_ids,
            attention_mask=torch.cat([before, p_mask], dim=1),
            position_ids=p_pos,
            use_cache=True,
            **{self.cache_kw: cache},
            **self.no_logits,
        )
        cache.batch_repeat_interleave(2)
        lengths = c + p_mask.sum(1)
        full_mask = torch.cat([before, p_mask], dim=1).repeat_interleave(2, 0)
        full_mask = torch.cat([full_mask, c_mask], dim=1)
        c_pos = lengths.repeat_interleave(2)[:, None] + torch.arange(tc)[None, :]
        ch, ccalls, c_last = self.rec.forward_from(
            comp_input,
            input_ids=c_ids,
            attention_mask=full_mask,
            position_ids=c_pos,
            use_cache=True,
            **{self.cache_kw: cache},
            **self.no_logits,
        )
        predicts = torch.zeros_like(c_mask, dtype=torch.bool)
        predicts[:, :-1] = c_mask[:, 1:].bool()
        targets = c_ids[:, 1:][c_mask[:, 1:].bool()]
        # m = 0 from this pass: blocks L..N on the same inputs, in the same stages, as a replay.
        base = _nll(
            self.rec,
            p_last,
            shared_predicts,
            shared_targets,
            c_ids[:, 0].reshape(n, 2),
            c_last,
            predicts,
            targets,
        )
        return PrefixCapture(
            common_hidden,
            common_calls,
            ph,
            pcalls,
            columns,
            shared_predicts,
            shared_targets,
            ch,
            ccalls,
            c_ids[:, 0],
            predicts,
            targets,
            base,
        )

    def run(
        self, cap: PrefixCapture, delta: Steerable, ms: Sequence[float], positions: PositionMode
    ) -> Tensor:
        """``[K, 2P]`` NLL sums, one row of the result per multiplier."""
        k = len(ms)
        n, tp = cap.prompt_hidden.shape[:2]
        rows, tc = cap.comp_hidden.shape[:2]
        c = cap.common_length
        m = torch.tensor(list(ms), dtype=torch.float32)
        model = self.rec.model
        cache = self._new_cache()
        with torch.no_grad():
            if cap.common_hidden is not None:
                with (
                    steer(model, delta, m=m, positions=positions, prompt_length=c) as s,
                    s.calling(k, c, past=0),
                ):
                    h = expand_batch(cap.common_hidden, 1, k)
                    if self.after_site is not None:
                        h = s.at_residual(self.after_site, h)
                    self.rec.blocks_from(h, cap.common_calls, 1, k, cache)
                cache.batch_repeat_interleave(n)  # row k*n + i: multiplier k, pair i
            with (
                steer(
                    model,
                    delta,
                    m=m.repeat_interleave(n),
                    positions=positions,
                    prompt_length=cap.prompt_columns.repeat(k),
                ) as s,
                s.calling(n * k, tp, past=c),
            ):
                h = expand_batch(cap.prompt_hidden, n, k)
                if self.after_site is not None:
                    h = s.at_residual(self.after_site, h)
                h = self.rec.blocks_from(h, cap.prompt_calls, n, k, cache)
            prompt_last = h
            cache.batch_repeat_interleave(2)
            with (
                steer(
                    model,
                    delta,
                    m=m.repeat_interleave(rows),
                    positions=positions,
                    prompt_length=cap.prompt_columns.repeat_interleave(2).repeat(k),
                ) as s,
                s.calling(rows * k, tc, past=c + tp),
            ):
                h = expand_batch(cap.comp_hidden, rows, k)
                if self.after_site is not None:
                    h = s.at_residual(self.after_site, h)
                h = self.rec.blocks_from(h, cap.comp_calls, rows, k, cache)
            nll = _nll(
                self.rec,
                prompt_last,
                cap.shared_predicts.repeat(k, 1),
                cap.shared_targets.repeat(k),
                cap.first_targets.reshape(n, 2).repeat(k, 1),
                h,
                cap.comp_predicts.repeat(k, 1),
                cap.comp_targets.repeat(k),
            )
        return nll.reshape(k, rows)


def _nll(
    rec: Recorder,
    prompt_last: Tensor,
    shared_predicts: Tensor,
    shared_targets: Tensor,
    first_targets: Tensor,
    comp_last: Tensor,
    comp_predicts: Tensor,
    comp_targets: Tensor,
) -> Tensor:
    """Per-row NLL sums ``[2 × rows of prompt_last]`` from the last block's outputs of the
    shared-start stage and of the continuation stage."""
    shared_lp = rec.logprobs(prompt_last[shared_predicts], shared_targets)
    # The end of each shared start predicts the first token of both continuations.
    first_lp = rec.logprobs(prompt_last[:, -1], first_targets).reshape(-1)
    rest_lp = rec.logprobs(comp_last[comp_predicts], comp_targets)
    return (
        row_nll(rest_lp, comp_predicts)
        + row_nll(shared_lp, shared_predicts).repeat_interleave(2)
        - first_lp.double().cpu()
    )
