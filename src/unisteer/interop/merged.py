"""A merged Hugging Face checkpoint: ``W + m·ΔW`` (and ``b + m·Δb``) saved with
``save_pretrained``, so plain ``AutoModelForCausalLM.from_pretrained`` runs the steered model.

A Δb needs a bias parameter at its site. Where the module has none, the checkpoint can hold one
only if the architecture's config has a switch that creates it (Llama's ``mlp_bias``,
``attention_bias``): :func:`bias_switches` finds such switches by building the model with each
boolean ``*bias*`` config key turned on, on the ``meta`` device, and keeping the keys that give
the site a bias and add nothing but biases. Every other bias the switch creates is saved as
zero, so the checkpoint computes exactly the merged weights. Without a switch the export is
refused (a bias the config does not declare would be dropped by ``from_pretrained``).
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unisteer.core.merge import check_materialised, merged_copy
from unisteer.core.steering_set import Steerable, deltas_of
from unisteer.errors import SiteError, UsageError


def _skeleton(config: Any) -> nn.Module:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        skeleton: nn.Module = AutoModelForCausalLM.from_config(config)
    return skeleton


def bias_switches(model: nn.Module, sites: list[str]) -> dict[str, bool]:
    """Boolean config keys that, turned on, give every module of ``sites`` a bias and add only
    biases to the model; raises :class:`SiteError` naming a site no key gives one."""
    config: Any = model.config
    names = set(dict(model.named_parameters()))
    candidates = [
        k for k, v in sorted(config.to_dict().items()) if "bias" in k.lower() and v is False
    ]
    chosen: dict[str, bool] = {}
    for site in sites:
        found = None
        for key in candidates:
            trial = copy.deepcopy(config)
            setattr(trial, key, True)
            try:
                skeleton = _skeleton(trial)
            except Exception:  # a switch the architecture does not accept
                continue
            added = set(dict(skeleton.named_parameters())) - names
            if f"{site}.bias" in added and all(n.endswith(".bias") for n in added):
                found = key
                break
        if found is None:
            raise SiteError(
                f"the delta at {site!r} has a bias Δb, but {site} has no bias and "
                f"{type(config).__name__} has no switch that gives it one, so a checkpoint "
                "cannot hold it. Keep steering with unisteer, or move the delta to a site "
                "with a bias."
            )
        chosen[found] = True
    return chosen


def export_merged(
    model: nn.Module,
    steerable: Steerable,
    m: float,
    directory: str | Path,
    *,
    tokenizer: Any | None = None,
) -> Path:
    """Save ``model`` with ``m``·``steerable`` folded into its weights as a Hugging Face
    checkpoint (safetensors) in ``directory``, with ``tokenizer`` beside it.

    Refused for a model whose weights are offloaded (on ``meta``), for vectors at block outputs
    (no weight there: :func:`unisteer.core.merge.merged_copy`), and for a Δb where the
    architecture cannot have a bias. The folder appears complete or not at all: it is written
    beside ``directory`` and renamed into place; an existing non-empty ``directory`` is refused.
    """
    check_materialised(model, "export a merged checkpoint")
    out = Path(directory)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} exists and is not empty; choose a new folder for the checkpoint")
    merged = merged_copy(model, steerable, m)
    needs_bias = [
        d.site
        for d in deltas_of(steerable)
        if (b := d.bias()) is not None
        and bool(b.any())
        and getattr(model.get_submodule(d.site), "bias", None) is None
    ]
    if needs_bias:
        merged = _with_bias_switches(model, merged, bias_switches(model, needs_bias))
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        merged.save_pretrained(scratch)  # type: ignore[operator]
        if tokenizer is not None:
            tokenizer.save_pretrained(scratch)
        if out.exists():
            out.rmdir()
        os.replace(scratch, out)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return out


def _with_bias_switches(
    model: nn.Module, merged: nn.Module, switches: dict[str, bool]
) -> nn.Module:
    """``merged`` rebuilt under a config with ``switches`` on: its weights, and zero for every
    bias the switches add that no delta set."""
    from transformers import AutoModelForCausalLM

    config: Any = copy.deepcopy(model.config)
    for key, value in switches.items():
        setattr(config, key, value)
    dtype = next(model.parameters()).dtype
    rebuilt: nn.Module = AutoModelForCausalLM.from_config(config, dtype=dtype)
    state = merged.state_dict()
    missing, unexpected = rebuilt.load_state_dict(state, strict=False)
    if unexpected or not all(k.endswith(".bias") for k in missing):
        raise SiteError(
            f"switching on {sorted(switches)} changed more than biases (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); cannot build the checkpoint"
        )
    with torch.no_grad():
        params = dict(rebuilt.named_parameters())
        for key in missing:
            params[key].zero_()
    if getattr(model, "generation_config", None) is not None:
        rebuilt.generation_config = copy.deepcopy(model.generation_config)
    return rebuilt
