"""What one row of a forward pass costs, what the devices running the blocks have free, and the
refusal of a row that cannot fit.

The estimates are rough upper bounds from the config's widths (:mod:`unisteer.model.config`);
they size batches against a memory budget (the sweep) and, compared with the memory the
device has free, refuse a single pair that no batch size could run, before anything is
allocated for it. Models without a context window (ALiBi) are bounded by this check alone.

The memory that counts is that of the devices the blocks execute on (:func:`block_devices`):
the least free over them (:func:`free_bytes`), each GPU's ``torch.cuda.mem_get_info``, the host
memory for blocks on the CPU or offloaded to disk without a GPU. A device map alone (module name
→ device) gives the same answer, so a plan is checked before any weight is allocated.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unisteer.data.pairs import PolarityPair
from unisteer.data.tokens import Encoded
from unisteer.errors import DataError
from unisteer.model.config import num_layers, vocab_size, widths
from unisteer.model.devices import (
    DeviceLike,
    as_device,
    distinct,
    execution_device,
    planned_device,
)


def row_bytes(model: nn.Module, width: int, logit_positions: int, *, grad: bool = False) -> int:
    """Rough float32 activation bytes of one sequence row of ``width`` tokens: the widest
    per-token tensors of a block, attention scores, and the logits at ``logit_positions``
    (x3 for the softmax and its temporaries). With ``grad``, autograd keeps every block's
    activations for the backward pass."""
    d, d_ff, heads = widths(model)
    block = width * (8 * d + 3 * d_ff + 2 * heads * width)
    blocks = (num_layers(model) or 1) if grad else 1
    return 4 * (block * blocks + 3 * logit_positions * vocab_size(model))


def _cgroup_free() -> int | None:
    """What the cgroup (v2) still allows this process, when it sets a limit."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((root / "memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None


def available_bytes(device: torch.device | str = "cpu") -> int | None:
    """Memory free for new tensors on ``device``: the CUDA allocator's free memory, or on the
    CPU the kernel's ``MemAvailable`` (and the cgroup's remaining allowance, when smaller);
    ``None`` when the platform does not say."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    if not found and hasattr(os, "sysconf"):
        with contextlib.suppress(OSError, ValueError):
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    if (cgroup := _cgroup_free()) is not None:
        found.append(cgroup)
    return min(found) if found else None


def model_device(model: nn.Module) -> torch.device:
    """Where the model's inputs go: the execution device of its input embedding (of its first
    module with tensors for a model without one), also when accelerate dispatched it
    (:func:`unisteer.model.devices.execution_device`); the CPU for a model without
    parameters."""
    get = getattr(model, "get_input_embeddings", None)
    embed = get() if callable(get) else None
    if isinstance(embed, nn.Module):
        return execution_device(embed)
    return execution_device(model)


def on_model_device(model: nn.Module, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``inputs`` (keyword arguments of ``model(...)``) with every tensor moved to
    :func:`model_device`: batches are built on the host, the model may be on a GPU."""
    device = model_device(model)
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def _block_names(model: nn.Module) -> list[str]:
    from unisteer.core.sites import find_blocks  # core builds on model/, not the reverse

    path, blocks = find_blocks(model)
    return [f"{path}.{i}" if path else str(i) for i in range(len(blocks))]


def block_devices(
    model: nn.Module, device_map: Mapping[str, DeviceLike] | None = None
) -> list[torch.device]:
    """The devices the model's blocks execute on, each once, in block order: from the plan
    ``device_map`` (module name → device, see :func:`unisteer.model.devices.planned_device`)
    when given (``model`` may then be an empty, ``meta`` model), else from where each block
    runs now."""
    names = _block_names(model)
    if device_map is not None:
        planned = [planned_device(device_map, n) for n in names]
        return distinct(d if d is not None else torch.device("cpu") for d in planned)
    return distinct(execution_device(model.get_submodule(n)) for n in names)


def free_bytes(model: nn.Module, device_map: Mapping[str, DeviceLike] | None = None) -> int | None:
    """The memory free on the devices running the blocks: the least over them
    (:func:`block_devices`, :func:`available_bytes`), ``None`` when no device says."""
    known = [
        b
        for d in block_devices(model, device_map)
        if (b := available_bytes(as_device(d))) is not None
    ]
    return min(known) if known else None


def batch_budget(
    model: nn.Module, budget: int, device_map: Mapping[str, DeviceLike] | None = None
) -> int:
    """``budget`` bytes of activations per call, lowered to what the blocks' devices have free
    (:func:`free_bytes`) when that is less."""
    free = free_bytes(model, device_map)
    return budget if free is None else max(1, min(budget, free))


def rows_that_fit(
    model: nn.Module,
    width: int,
    logit_positions: int,
    *,
    grad: bool = False,
    fraction: float = 0.5,
) -> int | None:
    """How many rows of ``width`` tokens (logits at ``logit_positions`` of each) one pass can
    hold in ``fraction`` of the memory free on the devices running the blocks (:func:`free_bytes`;
    the rest is left to the allocator, the weights' working copies and the optimiser); at least
    1, ``None`` when no device says how much it has free."""
    free = free_bytes(model)
    if free is None:
        return None
    return max(1, int(free * fraction) // row_bytes(model, width, logit_positions, grad=grad))


def check_pairs_fit(
    model: nn.Module,
    pairs: Sequence[PolarityPair],
    encoded: Sequence[tuple[Encoded, Encoded]],
    what: str,
    *,
    grad: bool = False,
    device_map: Mapping[str, DeviceLike] | None = None,
) -> None:
    """Refuse the longest of ``pairs`` (``encoded`` as :func:`~unisteer.data.tokens.
    encode_pairs` gave them) when its two rows alone, a full forward pass with logits at every
    position (and autograd's activations with ``grad``), need more memory than the model's
    blocks' devices have free (:func:`free_bytes`, of the plan ``device_map`` when given): no
    batch size could run it. ``what`` names the pass in the message."""
    if not encoded:
        return
    i = max(range(len(encoded)), key=lambda k: max(len(e.input_ids) for e in encoded[k]))
    width = max(len(e.input_ids) for e in encoded[i])
    need = 2 * row_bytes(model, width, width, grad=grad)
    free = free_bytes(model, device_map)
    if free is not None and need > free:
        message = f"{what} its {width} tokens needs about {need / 2**20:,.0f} MiB"
        raise DataError(
            f"{pairs[i].problem(message)}, more than the {free / 2**20:,.0f} MiB free on the "
            "devices running the model's blocks; shorten or drop the pair, or bound pair "
            "lengths with max_tokens (--max-tokens)"
        )
