"""Folding deltas into the weights: ``W ← W + m·ΔW``, ``b ← b + m·Δb`` on a copy of the model.

A weight is read only where it is in memory: a model dispatched with accelerate keeps offloaded
weights on the ``meta`` device (they are brought in by hooks, one forward at a time), and
arithmetic with a ``meta`` tensor returns garbage without an error, so merging refuses them
(:func:`check_materialised`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from unisteer.core.delta import Delta
from unisteer.core.sites import check_site, experts_transposed, linear_dims, split_param_path
from unisteer.core.steering_set import Steerable, deltas_of
from unisteer.errors import SiteError


def check_materialised(model: nn.Module, what: str = "merge") -> None:
    """Refuse a model whose weights are not all in memory (on ``meta``: offloaded by an
    accelerate ``device_map`` with ``"disk"`` or CPU offload), naming the first one."""
    for name, p in model.named_parameters():
        if p.device.type == "meta":
            raise SiteError(
                f"cannot {what}: the weight {name!r} is not in memory (it is on 'meta', as "
                "accelerate leaves offloaded weights between forward passes). Load the model "
                "without offloading (a device_map whose devices hold every weight, or none) "
                f"before you {what}."
            )


def merged_copy(model: nn.Module, delta: Steerable, m: float = 1.0) -> nn.Module:
    """A deep copy of ``model`` whose site weights include ``m``·the delta (every member of a
    steering set).

    The user's model is not touched. Linear sites and fused experts (each expert's
    ``W_e + m·ΔW_e``) can be merged: a vector on a block's
    residual output has no weight to fold into (place it on a linear site instead, e.g. the
    block's down-projection, whose bias it then becomes).
    """
    deltas = deltas_of(delta)
    for d in deltas:
        if d.site_kind == "residual":
            raise SiteError(
                f"cannot merge a delta on the residual output {d.site!r}: there is no weight "
                "there. Put the vector on a linear site (e.g. the MLP down-projection) to merge "
                "it, or export it as a llama.cpp control vector."
            )
        check_site(model, d)
    check_materialised(model)
    out = copy.deepcopy(model)
    for d in deltas:
        fold_into(out, d, m)
    return out


def fold_into(model: nn.Module, delta: Delta, m: float) -> None:
    """``W ← W + m·ΔW``, ``b ← b + m·Δb`` at ``delta``'s site of ``model``, in place (a bias is
    created where the module has none). For copies: :func:`merged_copy` is the public way."""
    if delta.site_kind == "experts":
        _fold_experts(model, delta, m)
        return
    module = model.get_submodule(delta.site)
    dims = linear_dims(module)
    if dims != (delta.d_in, delta.d_out):
        raise SiteError(f"{delta.site!r} is {dims}, the delta is {(delta.d_in, delta.d_out)}")
    weight: torch.Tensor = module.weight  # type: ignore[assignment]
    with torch.no_grad():
        dw = delta.weight()
        if dw is not None:
            dw = dw.detach().to(weight.device, torch.float32)
            if isinstance(module, nn.Linear):
                weight.copy_((weight.float() + m * dw).to(weight.dtype))
            else:  # Conv1D stores W transposed
                weight.copy_((weight.float() + m * dw.T).to(weight.dtype))
        db = delta.bias()
        if db is not None and (getattr(module, "bias", None) is not None or bool(db.any())):
            db = db.detach().to(weight.device, torch.float32)
            bias = getattr(module, "bias", None)
            if bias is None:
                module.bias = nn.Parameter((m * db).to(weight.dtype), requires_grad=False)
            else:
                bias.copy_((bias.float() + m * db).to(bias.dtype))


def _fold_experts(model: nn.Module, delta: Delta, m: float) -> None:
    """``W_e ← W_e + m·ΔW_e`` for every expert, in place."""
    parent, name = split_param_path(delta.site)
    owner = model.get_submodule(parent)
    weight: torch.Tensor = getattr(owner, name)
    dw = delta.weight()
    assert dw is not None
    with torch.no_grad():
        dw = dw.detach().to(weight.device, torch.float32)
        if not delta.per_expert:
            dw = dw.expand(weight.shape[0], *dw.shape)
        if experts_transposed(owner):
            dw = dw.transpose(-1, -2)
        weight.copy_((weight.float() + m * dw).to(weight.dtype))
