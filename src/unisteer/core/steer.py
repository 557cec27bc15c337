"""Applying deltas to a model: the only place where hooks live.

>>> with steer(model, delta, m=4.0, positions="completion"):
...     out = model.generate(**inputs)

Inside the ``with`` block, each delta's site gets a forward hook that adds
``m·(ΔW x + Δb)`` to the site's output at the selected tokens (see
:mod:`unisteer.core.positions`); at a mixture of experts' fused projection, the experts module's
hook adds each routed expert's ``m·ΔW_e a_e`` (:meth:`Steering._experts_hook`). A pre-hook on
the model reads how many tokens the KV cache already holds, so every token knows its absolute
column. On exit, even when the body raised, every hook
is removed: the model's parameters and buffers are never touched.

State written during a forward pass: only :class:`Steering`'s record of the call in progress
(``_columns``, ``_batch``: which absolute columns and how many rows the current call covers,
read from the KV cache's length or ``cache_position``; ``_inferred_prompt_length``: the width
of the first call on an empty cache, i.e. ``generate``'s prefill). KV-cached generation needs
them so that ``positions="prompt"/"completion"`` and per-token multipliers stay correct token by
token. They are reset after every call and on exit. Nothing else is written in ``forward``.

The other context managers here (:func:`record_outputs`, :func:`intercept_inputs`,
:func:`watch_outputs`) only observe or replace a module's arguments for the replay engine
(:mod:`unisteer.replay.recorder`) and the closed-form objectives; like :class:`Steering`, they
remove their hooks on exit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from unisteer.core.delta import Delta, add_scaled
from unisteer.core.outputs import hidden_of, with_hidden
from unisteer.core.positions import (
    Multiplier,
    Positions,
    PromptLength,
    token_scale,
    validate_multiplier,
    validate_positions,
)
from unisteer.core.sites import check_site, experts_transposed, split_param_path
from unisteer.core.steering_set import SteeringSet, deltas_of
from unisteer.errors import SteeringError
from unisteer.model.devices import is_offloaded

#: What a delta does at its site: ``"add"`` adds ``m·(ΔW x + Δb)``; ``"null"`` (vectors only)
#: adds ``m·(-ReLU(y·v)/‖v‖²·v)``, removing the positive component of the output along v.
Op = Literal["add", "null"]
OPS: tuple[str, ...] = ("add", "null")


def _tokens_in_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    for key in ("input_ids", "inputs_embeds"):
        t = kwargs.get(key)
        if isinstance(t, Tensor) and t.dim() >= 2:
            return int(t.shape[1])
    if args and isinstance(args[0], Tensor) and args[0].dim() >= 2:
        return int(args[0].shape[1])
    return None


def _cached_length(kwargs: dict[str, Any], n_tokens: int) -> int:
    """How many columns the KV cache holds before this call."""
    for key in ("cache", "past_key_values"):
        cache = kwargs.get(key)
        if cache is None:
            continue
        if hasattr(cache, "get_seq_length"):
            return int(cache.get_seq_length())
        if isinstance(cache, tuple | list) and cache and isinstance(cache[0], tuple | list):
            return int(cache[0][0].shape[-2])  # legacy tuple-of-tuples cache
    mask = kwargs.get("attention_mask")
    if isinstance(mask, Tensor) and mask.dim() == 2 and mask.shape[1] > n_tokens:
        return int(mask.shape[1]) - n_tokens
    return 0


class Steering:
    """Context manager that applies deltas to a model for the duration of a ``with`` block.

    Use :func:`steer` to build one. Not re-entrant: enter it once at a time.
    """

    def __init__(
        self,
        model: nn.Module,
        deltas: Sequence[Delta],
        multipliers: Sequence[Multiplier],
        positions: Positions = "all",
        prompt_length: PromptLength | None = None,
        ops: Sequence[Op] | None = None,
    ) -> None:
        if len(deltas) != len(multipliers):
            raise SteeringError(
                f"got {len(deltas)} deltas but {len(multipliers)} multipliers; give one m or "
                "one per delta"
            )
        ops = list(ops) if ops is not None else ["add"] * len(deltas)
        if len(ops) != len(deltas):
            raise SteeringError(f"got {len(deltas)} deltas but {len(ops)} ops")
        for op, d in zip(ops, deltas, strict=True):
            if op not in OPS:
                raise SteeringError(f"op must be one of {OPS}, got {op!r}")
            if op == "null" and d.kind != "vector":
                raise SteeringError(
                    f"op='null' applies to vector deltas only, not {d.kind!r} (use -m instead)"
                )
        for m in multipliers:
            validate_multiplier(m)
        validate_positions(positions)
        self.model = model
        self.deltas = list(deltas)
        self.multipliers = list(multipliers)
        self.ops: list[Op] = ops
        self.positions = positions
        self.prompt_length = prompt_length
        self._handles: list[RemovableHandle] = []
        self._columns: Tensor | None = None
        self._batch: int | None = None
        self._inferred_prompt_length: int | None = None

    # -- model-level bookkeeping: which columns the current call covers ------------------------

    def _before_model(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        n = _tokens_in_call(args, kwargs)
        if n is None:
            self._columns = self._batch = None
            return
        first = kwargs.get("input_ids", kwargs.get("inputs_embeds"))
        if first is None:
            first = args[0]
        self._batch = int(first.shape[0])
        cache_position = kwargs.get("cache_position")
        if isinstance(cache_position, Tensor) and cache_position.numel() == n:
            columns = cache_position.reshape(-1).long()
        else:
            past = _cached_length(kwargs, n)
            columns = torch.arange(past, past + n)
        if int(columns[0]) == 0:
            # A fresh sequence: everything in this call is prompt (generate's prefill).
            self._inferred_prompt_length = n
        self._columns = columns

    def _after_model(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self._columns = self._batch = None

    # -- site-level: add m·(ΔW x + Δb) --------------------------------------------------------

    def _scale(self, delta: Delta, m: Multiplier, y: Tensor) -> float | Tensor:
        """The multiplier of each token of a site's output ``y`` (a float when it is one
        number for all), shaped to broadcast over ``y.shape[:-1]``."""
        columns, batch, flat = self._layout(y)
        prompt_length = (
            self.prompt_length if self.prompt_length is not None else self._inferred_prompt_length
        )
        scale = token_scale(m, self.positions, columns, batch, prompt_length)
        if isinstance(scale, float):
            return scale
        if flat:
            return scale.reshape(-1)
        if y.dim() != 3:
            raise SteeringError(
                f"site {delta.site!r} produced a {y.dim()}-d output; per-row or per-token "
                "multipliers and position masks need [batch, tokens, width]"
            )
        return scale

    def _site_hook(self, delta: Delta, m: Multiplier, op: Op = "add") -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
            y = hidden_of(output)
            if not isinstance(y, Tensor):
                raise SteeringError(
                    f"site {delta.site!r} returned {type(y).__name__}, not a tensor"
                )
            # A dispatched model's hooks move a module's inputs after this hook saw them, and
            # its output is on the site's execution device: the delta computes there.
            x = args[0].to(y.device) if delta.site_kind == "linear" else y
            scale = self._scale(delta, m, y)
            if isinstance(scale, float) and scale == 0.0:
                return None
            contribution = delta.null(y) if op == "null" else delta(x)
            return with_hidden(output, add_scaled(y, contribution, scale))

        return hook

    def _experts_hook(self, delta: Delta, m: Multiplier, owner: nn.Module) -> Any:
        """The hook on a fused-experts module for a delta on its projection ``P``.

        The experts' output is linear in ``P`` (their last projection): with routing weights
        ``w`` and inner activations ``a_e``, ``Σ_e w_e (P_e + m·ΔW_e) a_e`` is the output plus
        ``m`` times the same module run with ``P := ΔW`` (and its bias, if any, := 0). So the
        hook runs the experts once more with ΔW in place of ``P``
        (:func:`torch.func.functional_call`, which leaves the module's parameters alone):
        exactly ``W_e + m·ΔW_e`` for each routed expert, nothing for the others, whatever
        kernel the experts use. That second run comes back through this hook; it is told
        apart because the module's ``P`` is then ΔW, not the model's own parameter.
        """
        _, name = split_param_path(delta.site)
        original = getattr(owner, name)
        bias_name = f"{name}_bias"
        bias = getattr(owner, bias_name, None)
        transposed = experts_transposed(owner)

        def hook(
            module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
        ) -> Any:
            if getattr(module, name) is not original:  # the re-run below
                return None
            y = hidden_of(output)
            scale = self._scale(delta, m, y)
            if isinstance(scale, float) and scale == 0.0:
                return None
            dw = delta.weight()
            assert dw is not None
            if not delta.per_expert:
                dw = dw.expand(original.shape[0], *dw.shape)
            if transposed:
                dw = dw.transpose(-1, -2)
            swap = {name: dw.to(device=original.device, dtype=original.dtype)}
            if isinstance(bias, Tensor):
                swap[bias_name] = torch.zeros_like(bias)
            contribution = hidden_of(torch.func.functional_call(module, swap, args, kwargs))
            return with_hidden(output, add_scaled(y, contribution.float(), scale))

        return hook

    def _layout(self, y: Tensor) -> tuple[Tensor, int, bool]:
        """Columns and batch size for a site output, and whether its tokens are flattened.

        Most models give sites ``[B, T, width]``; some (OPT) flatten tokens to ``[B·T, width]``
        inside the MLP. The model-level pre-hook tells which columns this call covers.
        """
        columns, batch = self._columns, self._batch
        if y.dim() == 3:
            n = y.shape[1]
            if columns is None or columns.numel() != n:
                columns = torch.arange(n)
            return columns, y.shape[0], False
        if (
            y.dim() == 2
            and columns is not None
            and batch is not None
            and y.shape[0] == batch * columns.numel()
        ):
            return columns, batch, True
        return torch.arange(1), y.shape[0], False

    def at_site(self, index: int, y: Tensor) -> Tensor:
        """What delta ``index`` makes of its site's output ``y``, for a caller that has the
        output without running the site's module (a replay that starts after the block whose
        output is the site). Residual sites only; use inside :meth:`calling`."""
        delta = self.deltas[index]
        if delta.site_kind != "residual":
            raise SteeringError(f"at_site needs a residual site, not {delta.site!r}")
        hook = self._site_hook(delta, self.multipliers[index], self.ops[index])
        out = hook(self.model.get_submodule(delta.site), (y,), y)
        return y if out is None else cast(Tensor, out)

    def at_residual(self, site: str, y: Tensor) -> Tensor:
        """What every delta at the residual site ``site`` makes of its output ``y``, in order
        (:meth:`at_site` for each); ``y`` itself when none sits there."""
        for index, delta in enumerate(self.deltas):
            if delta.site == site:
                y = self.at_site(index, y)
        return y

    @contextmanager
    def calling(self, batch: int, n_tokens: int, past: int = 0) -> Iterator[None]:
        """Declare the layout of a call that bypasses the model's own ``forward`` (e.g. running
        blocks directly): ``batch`` rows of ``n_tokens`` tokens starting at column ``past``."""
        saved = self._columns, self._batch
        self._columns, self._batch = torch.arange(past, past + n_tokens), batch
        try:
            yield
        finally:
            self._columns, self._batch = saved

    # -- context manager ----------------------------------------------------------------------

    def __enter__(self) -> Steering:
        if self._handles:
            raise SteeringError("this Steering context is already active")
        modules = [check_site(self.model, d) for d in self.deltas]
        for d, module in zip(self.deltas, modules, strict=True):
            if d.site_kind == "experts" and is_offloaded(module):
                # The re-run with ΔW in place of P (_experts_hook) would have accelerate load
                # the offloaded P over it: refuse rather than add a wrong contribution.
                raise SteeringError(
                    f"the experts at {d.site!r} are offloaded (their weights are on 'meta' "
                    "between calls): a delta inside fused experts needs them in memory; give "
                    "their block a device in device_map (not 'cpu' offload or 'disk')"
                )
        try:
            self._handles.append(
                self.model.register_forward_pre_hook(self._before_model, with_kwargs=True)
            )
            self._handles.append(
                self.model.register_forward_hook(self._after_model, always_call=True)
            )
            for delta, m, op, module in zip(
                self.deltas, self.multipliers, self.ops, modules, strict=True
            ):
                if delta.site_kind == "experts":
                    hook = self._experts_hook(delta, m, module)
                    self._handles.append(module.register_forward_hook(hook, with_kwargs=True))
                else:
                    hook = self._site_hook(delta, m, op)
                    self._handles.append(module.register_forward_hook(hook))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._remove()

    def _remove(self) -> None:
        for handle in reversed(self._handles):
            handle.remove()
        self._handles.clear()
        self._columns = self._batch = None
        self._inferred_prompt_length = None


@contextmanager
def record_outputs(model: nn.Module, site: str) -> Iterator[list[Tensor]]:
    """Collect the output of the module at ``site`` (detached) for every forward call made
    inside the ``with`` block; the hook is removed on exit."""
    module = model.get_submodule(site)
    seen: list[Tensor] = []

    def hook(mod: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        seen.append(hidden_of(output).detach())

    handle = module.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


#: ``fn(index, args, kwargs)`` called before ``modules[index]`` runs; it returns ``None`` (run
#: the module as called) or the ``(args, kwargs)`` to run it with instead.
InputHook = Callable[
    [int, tuple[Any, ...], dict[str, Any]], tuple[tuple[Any, ...], dict[str, Any]] | None
]


@contextmanager
def intercept_inputs(modules: Sequence[nn.Module], fn: InputHook) -> Iterator[None]:
    """Inside the ``with`` block, call ``fn`` with the arguments of every call of each module
    of ``modules`` before it runs (it may replace them, or raise to end the forward pass); the
    hooks are removed on exit. The replay engine records block inputs with it."""

    def hook(index: int) -> Any:
        def pre(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return fn(index, args, kwargs)

        return pre

    handles = []
    try:
        for i, module in enumerate(modules):
            handles.append(module.register_forward_pre_hook(hook(i), with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def watch_outputs(
    modules: Sequence[nn.Module], fn: Callable[[nn.Module, Any], None]
) -> Iterator[None]:
    """Inside the ``with`` block, call ``fn(module, output)`` after every call of each module of
    ``modules`` (the output is not changed); the hooks are removed on exit."""

    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        fn(module, output)

    handles = []
    try:
        for module in modules:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def steer(
    model: nn.Module,
    deltas: Delta | SteeringSet | Sequence[Delta],
    m: Multiplier | Sequence[Multiplier] = 1.0,
    *,
    positions: Positions = "all",
    prompt_length: PromptLength | None = None,
    ops: Op | Sequence[Op] | None = None,
) -> Steering:
    """Apply one or several deltas to ``model`` inside a ``with`` block.

    Args:
        model: any Hugging Face causal LM (or module containing the deltas' sites).
        deltas: one :class:`~unisteer.delta.Delta`, a
            :class:`~unisteer.core.steering_set.SteeringSet` (every member under the one ``m``)
            or a list; all act at once.
        m: the multiplier: a float, a ``[B]`` tensor (per row) or a ``[B, T_total]`` tensor
            (per column); or a list with one such value per delta. ``m = 0`` leaves the model's
            outputs bit-for-bit unchanged.
        positions: ``"all"`` (default), ``"prompt"``, ``"completion"`` or a boolean
            ``[B, T_total]`` mask over columns.
        prompt_length: int or ``[B]`` tensor: columns below it are prompt. When omitted, the
            width of the first forward call on an empty cache is the prompt (right for
            ``generate``, with left or right padding). Pass it when you score prompt and
            completion in one forward pass.
        ops: what each delta does: ``"add"`` (default) or, for vectors, ``"null"`` (RePS's
            null intervention ``-ReLU(y·v)/‖v‖²·v``, scaled by ``m``); one op or one per delta.
    """
    ds = deltas_of(deltas)
    ms: list[Multiplier] = (
        list(m) if isinstance(m, list | tuple) else [cast(Multiplier, m)] * len(ds)
    )
    op_list: list[Op] | None = (
        None if ops is None else [ops] * len(ds) if isinstance(ops, str) else list(ops)
    )
    return Steering(model, ds, ms, positions=positions, prompt_length=prompt_length, ops=op_list)
