"""Which tokens a delta acts on, and with what multiplier: pure functions, no hooks.

A forward call sees tokens at absolute *columns* ``past, past+1, ..., past+T-1`` of the padded
sequence, where ``past`` is what the KV cache already holds. Everything is indexed by column,
so a prompt padded on the left or on the right, processed in one pass or token by token, gets
the same answer:

* ``"all"``: every token.
* ``"prompt"``: columns ``< prompt_length`` (per row).
* ``"completion"``: columns ``>= prompt_length``: during ``generate`` the generated tokens.
* a boolean tensor ``[B, T_total]``: an explicit mask over columns.

The multiplier ``m`` is a float, a tensor ``[B]`` (one per row) or ``[B, T_total]`` (one per
column). The result of :func:`token_scale` is ``m`` times the mask for the tokens of one call:
a float when it is the same everywhere, else a ``[B, T]`` float32 tensor.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from unisteer.errors import SteeringError

PositionMode = Literal["all", "prompt", "completion"]
Positions = PositionMode | Tensor
Multiplier = float | int | Tensor
PromptLength = int | Tensor


def validate_positions(positions: Positions) -> None:
    if isinstance(positions, Tensor):
        if positions.dim() != 2:
            raise SteeringError(
                f"an explicit position mask must be [batch, columns], got shape "
                f"{tuple(positions.shape)}"
            )
        return
    if positions not in ("all", "prompt", "completion"):
        raise SteeringError(
            f"positions must be 'all', 'prompt', 'completion' or a [batch, columns] mask, "
            f"got {positions!r}"
        )


def validate_multiplier(m: Multiplier) -> None:
    if isinstance(m, Tensor):
        if m.dim() not in (0, 1, 2):
            raise SteeringError(
                f"m must be a float, a [batch] tensor or a [batch, columns] tensor, got shape "
                f"{tuple(m.shape)}"
            )
        if m.is_floating_point() and not bool(torch.isfinite(m).all()):
            raise SteeringError("m contains NaN or inf")
    elif not isinstance(m, float | int) or isinstance(m, bool):
        raise SteeringError(f"m must be a float or a tensor, got {type(m).__name__}")
    elif m != m or m in (float("inf"), float("-inf")):
        raise SteeringError(f"m must be finite, got {m}")


def _by_column(t: Tensor, columns: Tensor, batch: int, what: str) -> Tensor:
    if t.shape[0] != batch:
        raise SteeringError(f"{what} has {t.shape[0]} rows but the batch has {batch}")
    last = int(columns.max())
    if t.shape[1] <= last:
        raise SteeringError(
            f"{what} covers {t.shape[1]} columns but the model is at column {last}; during "
            "generate, per-token tensors must span prompt + new tokens"
        )
    return t.to(columns.device)[:, columns]


def token_scale(
    m: Multiplier,
    positions: Positions,
    columns: Tensor,
    batch: int,
    prompt_length: PromptLength | None,
) -> float | Tensor:
    """The multiplier for each token of one forward call: ``m`` times the position mask.

    Args:
        m: float, ``[B]`` or ``[B, T_total]``.
        positions: a mode or a boolean ``[B, T_total]`` mask.
        columns: ``[T]`` absolute column of each token of this call.
        batch: ``B`` of this call.
        prompt_length: int or ``[B]``; needed for ``"prompt"`` and ``"completion"``.

    Returns:
        A float (same everywhere) or a float32 tensor ``[B, T]``.
    """
    if isinstance(m, Tensor) and m.dim() == 0:
        m = float(m)
    if isinstance(m, Tensor):
        if m.dim() == 1:
            if m.shape[0] != batch:
                raise SteeringError(f"m has {m.shape[0]} rows but the batch has {batch}")
            scale: float | Tensor = m.to(columns.device, torch.float32)[:, None].expand(
                batch, columns.numel()
            )
        else:
            scale = _by_column(m, columns, batch, "m").to(torch.float32)
    else:
        scale = float(m)

    if isinstance(positions, Tensor):
        mask = _by_column(positions, columns, batch, "the position mask").bool()
    elif positions == "all":
        return scale
    else:
        if prompt_length is None:
            raise SteeringError(f"positions={positions!r} needs a prompt length")
        if isinstance(prompt_length, Tensor):
            p = prompt_length.to(columns.device).reshape(-1)
            if p.numel() == 1:
                p = p.expand(batch)
            if p.numel() != batch:
                raise SteeringError(
                    f"prompt_length has {p.numel()} entries but the batch has {batch}"
                )
        else:
            p = torch.full((batch,), int(prompt_length), device=columns.device)
        in_prompt = columns[None, :] < p[:, None]
        mask = in_prompt if positions == "prompt" else ~in_prompt

    if isinstance(scale, float):
        return mask.to(torch.float32) * scale
    return scale * mask.to(torch.float32)
