"""Training checkpoints: the delta, the optimiser state and the loop position, written
atomically as safetensors plus JSON (never pickle).

``checkpoint.safetensors`` holds the delta's parameters (``delta.<name>``) and AdamW's moments
(``adam.<i>.exp_avg``, ``adam.<i>.exp_avg_sq``, ``adam.<i>.step``); ``checkpoint.json`` holds
the loop position, the history so far, the training configuration, and the SHA-256 of the
tensor file, so that a pair of files from two different saves is detected. The tensor file is
written first and the JSON last: a crash between the two leaves the previous JSON, whose hash
no longer matches, and loading says so.
"""

from __future__ import annotations

import hashlib
import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save

from unisteer.core.delta import Delta
from unisteer.errors import UnisteerError
from unisteer.files import write_bytes_atomic, write_text_atomic

TENSORS = "checkpoint.safetensors"
STATE = "checkpoint.json"


class CheckpointError(UnisteerError):
    """A checkpoint is missing, inconsistent or made under other settings."""


@dataclass
class LoopState:
    """Where the training loop is: the next (epoch, micro-batch) to run and what happened."""

    epoch: int = 0
    micro: int = 0
    step: int = 0  # optimiser steps taken
    history: list[dict[str, Any]] = field(default_factory=list)
    validation: list[dict[str, Any]] = field(default_factory=list)


def save_checkpoint(
    directory: str | Path,
    delta: Delta,
    optimizer: torch.optim.Optimizer,
    loop: LoopState,
    config: dict[str, Any],
) -> Path:
    out = Path(directory)
    tensors: dict[str, torch.Tensor] = {
        f"delta.{k}": v.detach().contiguous() for k, v in delta.tensors().items()
    }
    params = list(delta.parameters())
    for i, p in enumerate(params):
        st = optimizer.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq", "step"):
            if key in st:
                value = st[key]
                tensors[f"adam.{i}.{key}"] = (
                    value.detach().reshape(-1).to(torch.float32)
                    if key == "step"
                    else value.detach().contiguous()
                )
    blob = save(tensors)
    write_bytes_atomic(out / TENSORS, blob)
    state = {
        "epoch": loop.epoch,
        "micro": loop.micro,
        "step": loop.step,
        "history": loop.history,
        "validation": loop.validation,
        "config": config,
        "tensors_sha256": hashlib.sha256(blob).hexdigest(),
    }
    write_text_atomic(out / STATE, json.dumps(state, indent=1) + "\n")
    return out


def has_checkpoint(directory: str | Path) -> bool:
    return (Path(directory) / STATE).is_file()


@contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) back until the block ends, then raise ``KeyboardInterrupt``.

    The trainer runs an optimiser step together with the loop counters that record it, and a
    checkpoint's two files, inside this block, so an interrupt can never leave a checkpoint
    saying step k with the parameters of step k + 1. Only in the main thread (the only one
    Python delivers signals to); elsewhere the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


#: The keys of ``checkpoint.json`` and their types.
_STATE_KEYS: dict[str, type | tuple[type, ...]] = {
    "epoch": int,
    "micro": int,
    "step": int,
    "history": list,
    "validation": list,
    "config": dict,
    "tensors_sha256": str,
}


def _check_state(state: Any, path: Path) -> None:
    """``checkpoint.json`` has every key with its type (non-negative counters), or a
    :class:`CheckpointError` names the key."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    for key, typ in _STATE_KEYS.items():
        if key not in state:
            raise CheckpointError(
                f"{path}: missing key {key!r}; delete the checkpoint folder to start over"
            )
        value = state[key]
        if not isinstance(value, typ) or isinstance(value, bool):
            raise CheckpointError(
                f"{path}: key {key!r} should be {getattr(typ, '__name__', typ)}, got "
                f"{type(value).__name__}; delete the checkpoint folder to start over"
            )
        if typ is int and isinstance(value, int) and value < 0:
            raise CheckpointError(f"{path}: key {key!r} is negative ({value})")


def load_checkpoint(
    directory: str | Path,
    delta: Delta,
    optimizer: torch.optim.Optimizer,
    config: dict[str, Any],
) -> LoopState:
    """Restore the delta and the optimiser in place; return the loop position.

    Refuses a checkpoint written under another configuration, naming the differing keys.
    """
    d = Path(directory)
    try:
        state = json.loads((d / STATE).read_text(encoding="utf-8"))
        blob = (d / TENSORS).read_bytes()
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"cannot read the checkpoint in {d}: {e}") from e
    _check_state(state, d / STATE)
    if hashlib.sha256(blob).hexdigest() != state.get("tensors_sha256"):
        raise CheckpointError(
            f"{d / TENSORS} does not match {d / STATE} (a save was interrupted?); delete the "
            "checkpoint folder to start over"
        )
    saved = state.get("config", {})
    differ = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
    if differ:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {config.get(k)!r}" for k in differ)
        raise CheckpointError(
            f"the checkpoint in {d} was made with other settings ({detail}); resume with the "
            "same settings, or use another output folder"
        )
    try:
        tensors = load(blob)
    except Exception as e:  # safetensors raises several types for a damaged file
        raise CheckpointError(f"{d / TENSORS} is not a valid safetensors file: {e}") from e
    missing = [f"delta.{n}" for n in delta.tensors() if f"delta.{n}" not in tensors]
    if missing:
        raise CheckpointError(f"{d / TENSORS} lacks {', '.join(missing)}; delete the checkpoint")
    own = {name: tensors[f"delta.{name}"] for name in delta.tensors()}
    for name, t in own.items():
        if tuple(t.shape) != tuple(delta.tensors()[name].shape):
            raise CheckpointError(
                f"{d / TENSORS}: delta.{name} has shape {tuple(t.shape)}, the delta "
                f"{tuple(delta.tensors()[name].shape)}; delete the checkpoint to start over"
            )
    delta.load_tensors(own)
    params = list(delta.parameters())
    for i, p in enumerate(params):
        if f"adam.{i}.exp_avg" in tensors:
            optimizer.state[p] = {
                "step": tensors[f"adam.{i}.step"].reshape(()).clone(),
                "exp_avg": tensors[f"adam.{i}.exp_avg"].clone(),
                "exp_avg_sq": tensors[f"adam.{i}.exp_avg_sq"].clone(),
            }
    return LoopState(
        epoch=int(state["epoch"]),
        micro=int(state["micro"]),
        step=int(state["step"]),
        history=list(state["history"]),
        validation=list(state["validation"]),
    )
