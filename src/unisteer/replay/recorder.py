"""One ordinary forward pass that records what a replay needs, and the replay of blocks.

The model is frozen and the delta sits in block L, so everything before block L does not
depend on the multiplier (nor does block L itself when the site is its output: then the replay
starts at block L + 1, and the delta is applied to that block's input). :class:`Recorder`
runs one ordinary forward pass and records the first replayed block's input and the arguments
each later block receives (attention masks, position embeddings...: whatever the architecture
passes, found by structure, never by name). Replaying those blocks on that input, with the
batch repeated once per multiplier and a per-row ``m``, then gives every point of a sweep. The
output head (final norm, unembedding) is found the same way, by recording which modules run
after the last block, and is applied only at positions that predict completion tokens.

On a model dispatched with accelerate (:mod:`unisteer.model.devices`) every block and every
module of the head is called as a module, so its hook moves the inputs to its device and brings
offloaded weights in; outputs stay on the device of the module that made them.

The runners built on it are :mod:`unisteer.replay.stacked` and :mod:`unisteer.replay.prefix`;
:mod:`unisteer.replay.check` decides whether one may be trusted on a model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from unisteer.core.outputs import hidden_of
from unisteer.core.sites import find_blocks
from unisteer.core.steer import intercept_inputs, watch_outputs
from unisteer.model.config import logit_scale, logit_softcap
from unisteer.model.devices import is_offloaded
from unisteer.model.memory import on_model_device
from unisteer.replay.logprob import finish_logits, token_logprobs, unembed_logprobs

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


def row_group(value: Any, batch: int) -> int | None:
    """How many consecutive entries along dim 0 each of ``batch`` rows owns in ``value``, or
    ``None`` when ``value`` is not per-row.

    Per-row tensors are found by structure, whatever the architecture calls them: at least 2-D,
    with a first dimension that is a positive multiple ``g`` of the batch, laid out row-major
    (row ``i`` owns entries ``i·g .. i·g + g − 1``). Most are ``[B, ...]`` (``g = 1``: masks,
    position embeddings); ALiBi biases are ``[B·H, 1, T]`` (``g = H``, Bloom, Falcon). A
    shared tensor that merely has such a shape is a false positive the exactness check
    (:mod:`unisteer.replay.check`) catches, since it replays several multipliers at once.
    """
    if isinstance(value, Tensor) and value.dim() >= 2 and batch > 0:
        n = value.shape[0]
        if n > 0 and n % batch == 0:
            return n // batch
    return None


def expand_batch(value: Any, batch: int, times: int) -> Any:
    """Repeat every per-row tensor of ``value`` (see :func:`row_group`) ``times`` along dim 0,
    as whole copies: row ``k * batch + i`` is copy ``k`` of row ``i``."""
    if times == 1:
        return value

    def rep(v: Any) -> Any:
        if row_group(v, batch) is not None:
            return v.repeat(times, *([1] * (v.dim() - 1)))
        return v

    return _map(value, rep)


def select_rows(value: Any, batch: int, rows: Tensor) -> Any:
    """Pick rows of every per-row tensor of ``value`` (see :func:`row_group`): row ``k`` of
    the result is row ``rows[k]`` of the input (all ``g`` entries it owns). Other values pass
    through unchanged."""

    def pick(v: Any) -> Any:
        g = row_group(v, batch)
        if g is None:
            return v
        grouped = v.reshape(batch, g, *v.shape[1:])
        return grouped.index_select(0, rows.to(v.device)).reshape(-1, *v.shape[1:])

    return _map(value, pick)


def _is_cache(value: Any) -> bool:
    return hasattr(value, "get_seq_length") and hasattr(value, "update")


def _swap_cache(value: Any, cache: Any) -> Any:
    return _map(value, lambda v: cache if _is_cache(v) else v)


class _Reached(Exception):
    """Raised by a hook to end a forward pass once the wanted input has been seen."""


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
    scale: tuple[float, float] = field(init=False, default=(1.0, 1.0))

    def __post_init__(self) -> None:
        self.blocks = list(find_blocks(self.model)[1])
        # What the model's forward does to the logits outside any module (scaling, then
        # soft-capping) belongs to the output head too.
        self.softcap = logit_softcap(self.model)
        self.scale = logit_scale(self.model)

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
        inputs = on_model_device(self.model, inputs)
        calls: list[Call] = []
        hidden: dict[str, Tensor] = {}
        head: list[nn.Module] = []
        after = {"on": False}
        replayed = self.blocks[self.layer :]

        def before_block(index: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            calls.append((args[1:], dict(kwargs)))
            if index != 0:
                return None
            if replace is None:
                hidden["h"] = args[0]
                return None
            hidden["h"] = replace(args[0])
            return (hidden["h"], *args[1:]), kwargs

        def last_done(module: nn.Module, output: Any) -> None:
            after["on"] = True
            hidden["last"] = hidden_of(output)

        def leaf(module: nn.Module, output: Any) -> None:
            if after["on"]:
                head.append(module)

        inside = {id(m) for b in self.blocks for m in b.modules()}
        outside = [] if self.head else [m for m in _leaves(self.model) if id(m) not in inside]
        with (
            intercept_inputs(replayed, before_block),
            watch_outputs(self.blocks[-1:], last_done),
            watch_outputs(outside, leaf),
            torch.no_grad(),
        ):
            logits = self.model(**inputs).logits
        if not self.head:
            self.head = head
        return hidden["h"], calls, logits, hidden.get("last")

    def block_input(self, **inputs: Any) -> Tensor:
        """Block L's input under ``model(**inputs)``, stopping the pass there: the blocks
        before L run exactly as in the ordinary forward pass, the rest not at all."""
        inputs = on_model_device(self.model, inputs)
        hidden: dict[str, Tensor] = {}

        def stop(index: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            hidden["h"] = args[0] if args else kwargs["hidden_states"]
            raise _Reached

        try:
            with intercept_inputs(self.blocks[self.layer : self.layer + 1], stop), torch.no_grad():
                self.model(**inputs)
        except _Reached:
            pass
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
            h = hidden_of(out)
        return h

    def logprobs(self, h: Tensor, targets: Tensor, chunk: int = HEAD_CHUNK) -> Tensor:
        """Log-probabilities (float64) of ``targets`` from final hidden states ``h[n, d]``,
        ``chunk`` positions at a time; ``targets[n]``, or ``targets[n, j]`` for ``j`` tokens
        predicted by the same position (the head runs once for them). Differentiable when
        autograd is on. Without autograd, when the head ends in a linear unembedding, its
        logits are never held whole (see :func:`unisteer.logprob.unembed_logprobs`);
        otherwise at most ``chunk × vocab`` of them are. The model's logit scale and soft-cap
        (:func:`unisteer.model.config.logit_scale`, :func:`~unisteer.model.config.logit_softcap`)
        are applied as its forward applies them."""
        *body, last = self.head if self.head else [nn.Identity()]
        graph = torch.is_grad_enabled() and h.requires_grad
        # An offloaded unembedding's weight is on 'meta' outside its call: run it as a module
        # (its accelerate hook brings the weight in) instead of reading the weight.
        unembed = last if type(last) is nn.Linear and not graph else None
        if unembed is not None and is_offloaded(unembed):
            unembed = None
        if unembed is None:
            body = list(self.head)
        parts = []
        # Without a graph to build, the head's own weights (which require grad) make none.
        with contextlib.nullcontext() if graph else torch.no_grad():
            for start in range(0, h.shape[0], chunk):
                x: Any = h[start : start + chunk]
                tgt = targets[start : start + chunk]
                for module in body:
                    x = module(x)
                    x = hidden_of(x)
                if unembed is not None:
                    parts.append(
                        unembed_logprobs(
                            x, unembed.weight, unembed.bias, tgt, self.softcap, scale=self.scale
                        )
                    )
                    continue
                logits = finish_logits(x, self.scale, self.softcap)
                if tgt.dim() == 2:
                    logits = logits[:, None, :].expand(-1, tgt.shape[1], -1)
                parts.append(token_logprobs(logits, tgt))
        if not parts:
            return h.new_zeros(targets.shape, dtype=torch.float64)
        return torch.cat(parts)
