"""What one row of a forward pass costs, what the device has free, and the refusal of a row
that cannot fit.

The estimates are rough upper bounds from the config's widths (:mod:`unisteer.model.config`);
they size batches against a memory budget (the sweep) and, compared with the memory the
device has free, refuse a single pair that no batch size could run, before anything is
allocated for it. Models without a context window (ALiBi) are bounded by this check alone.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from unisteer.data.pairs import PolarityPair
from unisteer.data.tokens import Encoded
from unisteer.errors import DataError
from unisteer.model.config import num_layers, vocab_size, widths


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
    """Where the model's first parameter lives (the CPU for a model without parameters)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def check_pairs_fit(
    model: nn.Module,
    pairs: Sequence[PolarityPair],
    encoded: Sequence[tuple[Encoded, Encoded]],
    what: str,
    *,
    grad: bool = False,
) -> None:
    """Refuse the longest of ``pairs`` (``encoded`` as :func:`~unisteer.data.tokens.
    encode_pairs` gave them) when its two rows alone, a full forward pass with logits at every
    position (and autograd's activations with ``grad``), need more memory than the model's
    device has free: no batch size could run it. ``what`` names the pass in the message."""
    if not encoded:
        return
    i = max(range(len(encoded)), key=lambda k: max(len(e.input_ids) for e in encoded[k]))
    width = max(len(e.input_ids) for e in encoded[i])
    need = 2 * row_bytes(model, width, width, grad=grad)
    free = available_bytes(model_device(model))
    if free is not None and need > free:
        message = f"{what} its {width} tokens needs about {need / 2**20:,.0f} MiB"
        raise DataError(
            f"{pairs[i].problem(message)}, more than the {free / 2**20:,.0f} MiB free on this "
            "machine; shorten or drop the pair, or bound pair lengths with max_tokens "
            "(--max-tokens)"
        )
