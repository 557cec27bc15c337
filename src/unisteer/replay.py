"""Re-running the blocks after a delta's site on cached inputs, for many multipliers at once.

The model is frozen and the delta sits in block L, so everything before block L does not
depend on the multiplier (nor does block L itself when the site is its output: then the replay
starts at block L + 1, and the delta is applied to that block's input). One ordinary forward
pass records the first replayed block's input and the arguments each later block receives
(attention masks, position embeddings...: whatever the architecture passes). Replaying those
blocks on that input, with the batch repeated once per multiplier and a per-row ``m``, then
gives every point of a sweep. The output head (final norm, unembedding) is found the same way,
by recording which modules run after the last block, and is applied only at positions that
predict completion tokens.

Two runners:

* :class:`PrefixRunner` (preferred): what sequences share runs once per multiplier, through
  the KV cache: the start common to the whole batch (a chat template's system turn), each
  pair's prompt with the start its two completions have in common, then the two
  continuations. Each stage's input is cut from the ordinary forward pass's, so only the
  replayed blocks are computed in another order than in a plain ``model(...)`` call.
* :class:`StackedRunner`: A_p and A_n are two full rows (prompt included), at about twice
  the work (on the default model it reproduced the ordinary forward pass bit for bit).

Both are checked against the ordinary forward pass before they are trusted (see
:mod:`unisteer.scoring`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from unisteer.data.tokens import Batch, Encoded
from unisteer.delta import Delta
from unisteer.logprob import token_logprobs, unembed_logprobs
from unisteer.positions import PositionMode
from unisteer.sites import find_blocks
from unisteer.steer import steer

Call = tuple[tuple[Any, ...], dict[str, Any]]  # positional args after the hidden state, kwargs
HEAD_CHUNK = 1024  # positions per call of the output head


def _leaves(module: nn.Module) -> Iterator[nn.Module]:
    for m in module.modules():
        if next(m.children(), None) is None:
            yield m


def _map(value: Any, fn: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_map(v, fn) for v in value)
    if isinstance(value, list):
        return [_map(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _map(v, fn) for k, v in value.items()}
    return fn(value)


def expand_batch(value: Any, batch: int, times: int) -> Any:
    """Repeat batch-shaped tensors (at least 2-D, first dim == ``batch``) ``times`` along dim 0,
    as whole copies: row ``k * batch + i`` is copy ``k`` of row ``i``."""
    if times == 1:
        return value

    def rep(v: Any) -> Any:
        if isinstance(v, Tensor) and v.dim() >= 2 and v.shape[0] == batch:
            return v.repeat(times, *([1] * (v.dim() - 1)))
        return v

    return _map(value, rep)


def select_rows(value: Any, batch: int, rows: Tensor) -> Any:
    """Pick rows of batch-shaped tensors (at least 2-D, first dim == ``batch``): row ``k`` of
    the result is row ``rows[k]`` of the input. Other values pass through unchanged."""

    def pick(v: Any) -> Any:
        if isinstance(v, Tensor) and v.dim() >= 2 and v.shape[0] == batch:
            return v.index_select(0, rows.to(v.device))
        return v

    return _map(value, pick)


def _is_cache(value: Any) -> bool:
    return hasattr(value, "get_seq_length") and hasattr(value, "update")


def _swap_cache(value: Any, cache: Any) -> Any:
    return _map(value, lambda v: cache if _is_cache(v) else v)


def cache_keyword(model: nn.Module) -> str:
    """The name under which the model's forward takes a KV cache (``cache`` in recent
    transformers, ``past_key_values`` before)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def softcap_of(model: nn.Module) -> float | None:
    config = getattr(model, "config", None)
    text = (
        config.get_text_config()
        if config is not None and hasattr(config, "get_text_config")
        else config
    )
    cap = getattr(text, "final_logit_softcapping", None)
    return float(cap) if isinstance(cap, int | float) and cap else None


def block_index_of(model: nn.Module, site: str) -> int:
    """Which decoder block contains the module at ``site``."""
    path, blocks = find_blocks(model)
    prefix = f"{path}." if path else ""
    if site.startswith(prefix):
        head = site[len(prefix) :].split(".", 1)[0]
        if head.isdigit() and int(head) < len(blocks):
            return int(head)
    raise ValueError(f"the site {site!r} is not inside a decoder block ({path}.N)")


class _Reached(Exception):
    """Raised by a hook to end a forward pass once the wanted input has been seen."""


def site_is_block_output(model: nn.Module, delta: Delta) -> bool:
    """Whether the delta acts on a decoder block's output (a residual site) and a block follows
    it: then the block itself does not depend on m, and a replay can start at the next one."""
    path, blocks = find_blocks(model)
    index = block_index_of(model, delta.site)
    prefix = f"{path}." if path else ""
    return (
        delta.site_kind == "residual"
        and delta.site == f"{prefix}{index}"
        and index + 1 < len(blocks)
    )


@dataclass
class Recorder:
    """Runs one ordinary forward pass, recording block inputs and the output head.

    ``layer`` is the first block a replay runs: the one holding the delta's site, or the next
    one when the site is that block's output."""

    model: nn.Module
    layer: int
    blocks: list[nn.Module] = field(init=False)
    head: list[nn.Module] = field(init=False, default_factory=list)
    softcap: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.blocks = list(find_blocks(self.model)[1])
        self.softcap = softcap_of(self.model)

    def forward(self, **inputs: Any) -> tuple[Tensor, list[Call], Tensor]:
        """``(block-L input, calls of blocks L..N, logits)`` of ``model(**inputs)``."""
        h, calls, logits, _ = self._pass(inputs, None)
        return h, calls, logits

    def forward_from(
        self, replace: Callable[[Tensor], Tensor], **inputs: Any
    ) -> tuple[Tensor, list[Call], Tensor]:
        """``model(**inputs)`` with block L's input ``h`` replaced by ``replace(h)``:
        ``(the replaced block-L input, calls of blocks L..N, the last block's output)``.
        Blocks L..N compute exactly what a replay of them at m = 0 computes."""
        h, calls, _, last = self._pass(inputs, replace)
        assert last is not None
        return h, calls, last

    def _pass(
        self, inputs: dict[str, Any], replace: Callable[[Tensor], Tensor] | None
    ) -> tuple[Tensor, list[Call], Tensor, Tensor | None]:
        calls: list[Call] = []
        hidden: dict[str, Tensor] = {}
        head: list[nn.Module] = []
        after = {"on": False}
        handles = []

        def pre(index: int) -> Any:
            def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                calls.append((args[1:], dict(kwargs)))
                if index != self.layer:
                    return None
                if replace is None:
                    hidden["h"] = args[0]
                    return None
                hidden["h"] = replace(args[0])
                return (hidden["h"], *args[1:]), kwargs

            return hook

        def last_done(module: nn.Module, args: Any, output: Any) -> None:
            after["on"] = True
            hidden["last"] = output[0] if isinstance(output, tuple) else output

        def leaf(module: nn.Module, args: Any, output: Any) -> None:
            if after["on"]:
                head.append(module)

        inside = {id(m) for b in self.blocks for m in b.modules()}
        try:
            for i in range(self.layer, len(self.blocks)):
                handles.append(self.blocks[i].register_forward_pre_hook(pre(i), with_kwargs=True))
            handles.append(self.blocks[-1].register_forward_hook(last_done))
            if not self.head:
                for m in _leaves(self.model):
                    if id(m) not in inside:
                        handles.append(m.register_forward_hook(leaf))
            with torch.no_grad():
                logits = self.model(**inputs).logits
        finally:
            for h in handles:
                h.remove()
        if not self.head:
            self.head = head
        return hidden["h"], calls, logits, hidden.get("last")

    def block_input(self, **inputs: Any) -> Tensor:
        """Block L's input under ``model(**inputs)``, stopping the pass there: the blocks
        before L run exactly as in the ordinary forward pass, the rest not at all."""
        hidden: dict[str, Tensor] = {}

        def stop(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            hidden["h"] = args[0] if args else kwargs["hidden_states"]
            raise _Reached

        handle = self.blocks[self.layer].register_forward_pre_hook(stop, with_kwargs=True)
        try:
            with torch.no_grad():
                self.model(**inputs)
        except _Reached:
            pass
        finally:
            handle.remove()
        return hidden["h"]

    def blocks_from(
        self,
        h: Tensor,
        calls: list[Call],
        batch: int,
        times: int = 1,
        cache: Any = None,
        rows: Tensor | None = None,
    ) -> Tensor:
        """Blocks L..N on ``h`` with the arguments recorded for ``batch`` rows: repeated
        ``times`` over (``batch * times`` rows), or picked by ``rows`` when given."""
        for block, (args, kwargs) in zip(self.blocks[self.layer :], calls, strict=True):
            if rows is not None:
                args, kwargs = select_rows(args, batch, rows), select_rows(kwargs, batch, rows)
            else:
                args = expand_batch(args, batch, times)
                kwargs = expand_batch(kwargs, batch, times)
            if cache is not None:
                args, kwargs = _swap_cache(args, cache), _swap_cache(kwargs, cache)
            out = block(h, *args, **kwargs)
            h = out[0] if isinstance(out, tuple) else out
        return h

    def logprobs(self, h: Tensor, targets: Tensor, chunk: int = HEAD_CHUNK) -> Tensor:
        """Log-probabilities (float64) of ``targets`` from final hidden states ``h[n, d]``,
        ``chunk`` positions at a time; ``targets[n]``, or ``targets[n, j]`` for ``j`` tokens
        predicted by the same position (the head runs once for them). Differentiable when
        autograd is on. Without autograd, when the head ends in a linear unembedding, its
        logits are never held whole (see :func:`unisteer.logprob.unembed_logprobs`);
        otherwise at most ``chunk × vocab`` of them are."""
        *body, last = self.head if self.head else [nn.Identity()]
        graph = torch.is_grad_enabled() and h.requires_grad
        unembed = last if type(last) is nn.Linear and not graph else None
        if unembed is None:
            body = list(self.head)
        parts = []
        for start in range(0, h.shape[0], chunk):
            x: Any = h[start : start + chunk]
            tgt = targets[start : start + chunk]
            for module in body:
                x = module(x)
                x = x[0] if isinstance(x, tuple) else x
            if unembed is not None:
                parts.append(unembed_logprobs(x, unembed.weight, unembed.bias, tgt, self.softcap))
                continue
            logits = x.float()
            if self.softcap:
                logits = torch.tanh(logits / self.softcap) * self.softcap
            if tgt.dim() == 2:
                logits = logits[:, None, :].expand(-1, tgt.shape[1], -1)
            parts.append(token_logprobs(logits, tgt))
        if not parts:
            return h.new_zeros(targets.shape, dtype=torch.float64)
        return torch.cat(parts)


def completion_targets(batch: Batch) -> tuple[Tensor, Tensor]:
    """Positions predicting a completion token (``[B, T]`` bool) and the tokens (flat)."""
    predicts = torch.zeros_like(batch.completion_mask)
    predicts[:, :-1] = batch.completion_mask[:, 1:]
    return predicts, batch.input_ids[:, 1:][batch.completion_mask[:, 1:]]


def row_sums(token_logp: Tensor, predicts: Tensor) -> Tensor:
    """Per-row NLL sums (float64) from flat log-probs ordered like ``predicts.nonzero()``."""
    rows = predicts.nonzero()[:, 0]
    nll = torch.zeros(predicts.shape[0], dtype=torch.float64)
    nll.index_add_(0, rows.cpu(), -token_logp.double().cpu())
    return nll


# -- stacked: A_p and A_n as full rows -----------------------------------------------------------


@dataclass
class StackedCapture:
    hidden: Tensor
    calls: list[Call]
    predicts: Tensor
    targets: Tensor
    prompt_lengths: Tensor
    base: Tensor  # [2P] NLL sums at m = 0 (the ordinary forward pass)


class StackedRunner:
    """Blocks L..N on full rows ``[p0+, p0-, ...]``, repeated once per multiplier."""

    name = "stacked"

    def __init__(self, model: nn.Module, layer: int, after_site: bool = False) -> None:
        """Replays blocks ``layer``..N; with ``after_site``, the delta acts on block
        ``layer``'s output, and the replay starts at the next block with the delta applied to
        its input."""
        self.after_site = after_site
        self.rec = Recorder(model, layer + 1 if after_site else layer)

    def capture(self, batch: Batch) -> StackedCapture:
        predicts, targets = completion_targets(batch)
        h, calls, logits = self.rec.forward(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
        )
        logp = token_logprobs(logits[predicts], targets)
        return StackedCapture(
            h, calls, predicts, targets, batch.prompt_lengths, row_sums(logp, predicts)
        )

    def run(
        self, cap: StackedCapture, delta: Delta, ms: Sequence[float], positions: PositionMode
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
            if self.after_site:
                h = s.at_site(0, h)
            h = self.rec.blocks_from(h, cap.calls, rows, k)
            predicts = cap.predicts.repeat(k, 1)
            logp = self.rec.logprobs(h[predicts], cap.targets.repeat(k))
        return row_sums(logp, predicts).reshape(k, rows)


# -- prefix: what sequences share runs once, through the KV cache -------------------------------


@dataclass
class PrefixCapture:
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

    def __init__(self, model: nn.Module, layer: int, after_site: bool = False) -> None:
        """As :class:`StackedRunner`."""
        self.after_site = after_site
        self.rec = Recorder(model, layer + 1 if after_site else layer)
        self.cache_kw = cache_keyword(model)
        # The staged pass only records arguments: skip the unembedding where the model can.
        params = inspect.signature(model.forward).parameters
        self.no_logits: dict[str, Any] = {"logits_to_keep": 1} if "logits_to_keep" in params else {}

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=getattr(self.rec.model, "config", None))

    def capture(
        self, encoded: Sequence[tuple[Encoded, Encoded]], pad: int, hidden: Tensor
    ) -> PrefixCapture | None:
        """The three stages' inputs to block L and the arguments blocks L..N receive.

        ``hidden`` is block L's input in the ordinary forward pass over the same pairs (rows
        ``[p0+, p0-, p1+, ...]``, right-padded, as :func:`unisteer.scoring.pair_batch` lays
        them out; :meth:`Recorder.block_input` gives it). The stages take their block-L inputs
        from it rather than from their own pass: the blocks before L are then the very
        computation the ordinary forward pass does, and only blocks L..N are computed in
        another order (by stage, through the KV cache), which halves the float32 rounding
        difference between the two. The staged pass is run only to record the arguments.
        Returns ``None`` when some pair's two rows have different prompt tokens.
        """
        if not all(_prompts_agree(e) for e in encoded):
            return None
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
        self, cap: PrefixCapture, delta: Delta, ms: Sequence[float], positions: PositionMode
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
                    if self.after_site:
                        h = s.at_site(0, h)
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
                if self.after_site:
                    h = s.at_site(0, h)
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
                if self.after_site:
                    h = s.at_site(0, h)
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
        row_sums(rest_lp, comp_predicts)
        + row_sums(shared_lp, shared_predicts).repeat_interleave(2)
        - first_lp.double()
    )
