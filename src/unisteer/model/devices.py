"""Where each module of a model runs, also when accelerate has dispatched it.

A model loaded with a ``device_map`` (:func:`unisteer.model.load.load_model`) has its blocks on
several devices, some of them *offloaded* (to the CPU or to ``"disk"``): their weights sit on
``meta`` between forward passes and an accelerate hook (``module._hf_hook``) brings them to its
*execution device* for each call. Every path of unisteer therefore calls modules as modules (so
the hooks run), moves tensors to :func:`execution_device` of the module that uses them, and
never reads a weight that :func:`is_offloaded` says is not in memory.

A device map alone (a dict of module name → device, as ``infer_auto_device_map`` plans it)
answers the same questions through :func:`planned_device`, without building the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import chain
from typing import Any

import torch
from torch import nn

DeviceLike = torch.device | str | int


def as_device(device: DeviceLike) -> torch.device:
    """A ``torch.device`` for what accelerate and device maps write: an index (a CUDA device),
    ``"cuda:1"``, ``"cpu"``; ``"disk"`` (offloaded weights, computed on the host) and ``"meta"``
    are the CPU."""
    if isinstance(device, torch.device):
        return torch.device("cpu") if device.type == "meta" else device
    if isinstance(device, int):
        return torch.device("cuda", device)
    if device in ("disk", "meta"):
        return torch.device("cpu")
    return torch.device(device)


def _hook_device(hook: Any) -> torch.device | None:
    """The execution device of an accelerate hook (or of the first of a chain that has one)."""
    if hook is None:
        return None
    for h in getattr(hook, "hooks", None) or (hook,):
        device = getattr(h, "execution_device", None)
        if device is not None:
            return as_device(device)
    return None


def execution_device(module: nn.Module) -> torch.device:
    """The device ``module``'s forward computes on: its accelerate hook's execution device when
    it has one, else the device of its first tensor in memory, else the first hook found among
    its submodules (a block whose weights are all offloaded), else the CPU."""
    found = _hook_device(getattr(module, "_hf_hook", None))
    if found is not None:
        return found
    for t in chain(module.parameters(), module.buffers()):
        if t.device.type != "meta":
            return t.device
    for sub in module.modules():
        found = _hook_device(getattr(sub, "_hf_hook", None))
        if found is not None:
            return found
    return torch.device("cpu")


def is_offloaded(module: nn.Module) -> bool:
    """Whether some weight of ``module`` is not in memory (on ``meta``, brought in by a hook
    only for the duration of a call)."""
    return any(p.device.type == "meta" for p in module.parameters())


def is_dispatched(model: nn.Module) -> bool:
    """Whether accelerate placed ``model`` with a device map (hooks on its modules)."""
    return getattr(model, "hf_device_map", None) is not None or any(
        hasattr(m, "_hf_hook") for m in model.modules()
    )


def planned_device(device_map: Mapping[str, DeviceLike], name: str) -> torch.device | None:
    """Where the plan ``device_map`` runs the module ``name``: the device of the entry of the
    longest module path that is ``name`` or contains it (``""`` is the whole model), ``None``
    when none does. As accelerate dispatches a plan, a module planned on ``"cpu"`` or
    ``"disk"`` computes on the plan's first other device when there is one (its weights are
    offloaded), and on the CPU otherwise."""
    best: str | None = None
    for key in device_map:
        if (key == "" or key == name or name.startswith(key + ".")) and (
            best is None or len(key) > len(best)
        ):
            best = key
    if best is None:
        return None
    device = device_map[best]
    if str(device) in ("cpu", "disk"):
        main = next((d for d in device_map.values() if str(d) not in ("cpu", "disk")), "cpu")
        return as_device(main)
    return as_device(device)


def distinct(devices: Iterable[torch.device]) -> list[torch.device]:
    """``devices`` without repeats, in first-seen order."""
    out: list[torch.device] = []
    for d in devices:
        if d not in out:
            out.append(d)
    return out
