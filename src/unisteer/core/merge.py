"""Folding a delta into the weights: ``W ← W + m·ΔW``, ``b ← b + m·Δb`` on a copy of the model."""

from __future__ import annotations

import copy

import torch
from torch import nn

from unisteer.core.delta import Delta
from unisteer.core.sites import check_site, experts_transposed, linear_dims, split_param_path
from unisteer.errors import SiteError


def merged_copy(model: nn.Module, delta: Delta, m: float = 1.0) -> nn.Module:
    """A deep copy of ``model`` whose site weights include ``m``·the delta.

    The user's model is not touched. Linear sites and fused experts (each expert's
    ``W_e + m·ΔW_e``) can be merged: a vector on a block's
    residual output has no weight to fold into (place it on a linear site instead, e.g. the
    block's down-projection, whose bias it then becomes).
    """
    if delta.site_kind == "experts":
        return _merged_experts(model, delta, m)
    if delta.site_kind != "linear":
        raise SiteError(
            f"cannot merge a delta on the residual output {delta.site!r}: there is no weight "
            "there. Put the vector on a linear site (e.g. the MLP down-projection) to merge it."
        )
    out = copy.deepcopy(model)
    module = out.get_submodule(delta.site)
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
        if db is not None:
            db = db.detach().to(weight.device, torch.float32)
            bias = getattr(module, "bias", None)
            if bias is None:
                module.bias = nn.Parameter((m * db).to(weight.dtype), requires_grad=False)
            else:
                bias.copy_((bias.float() + m * db).to(bias.dtype))
    return out


def _merged_experts(model: nn.Module, delta: Delta, m: float) -> nn.Module:
    """``W_e ← W_e + m·ΔW_e`` for every expert, on a copy of ``model``."""
    check_site(model, delta)
    out = copy.deepcopy(model)
    parent, name = split_param_path(delta.site)
    owner = out.get_submodule(parent)
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
    return out
