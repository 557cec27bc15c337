"""PEFT LoRA adapters: ``adapter_config.json`` + ``adapter_model.safetensors``, both ways.

PEFT computes ``W x + s·B A x`` at every targeted module, with ``A`` ``[r, d_in]`` saved as
``base_model.model.<module>.lora_A.weight``, ``B`` ``[d_out, r]`` as ``...lora_B.weight`` and
``s = lora_alpha / r`` (``lora_alpha / √r`` with rsLoRA; ``alpha_pattern`` and ``rank_pattern``
override per module). That is a unisteer LoRA delta ``ΔW = B·A`` at ``m = s``, so:

* **export** writes each member at the chosen ``m`` with ``m`` folded into ``B`` and
  ``lora_alpha = r`` (``s = 1``), every module named by its full path in ``target_modules``
  (PEFT's ``PeftModel.from_pretrained``, Hugging Face's ``model.load_adapter`` and vLLM then
  compute exactly our hook's ``m·B A x``). A local weight update becomes a LoRA by truncated
  SVD to the rank asked for, and the relative error ``‖ΔW − B A‖_F / ‖ΔW‖_F`` is reported;
* **import** folds ``s`` into ``B`` and gives a steering set of LoRA deltas whose ``m = 1``
  is the adapter as PEFT applies it. What is not ``W + s·B A`` is refused with the reason:
  DoRA (a learned magnitude rescales W's columns), ``lora_bias``, ``modules_to_save`` (whole
  modules replaced) and LoRA on embeddings.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn
from transformers.pytorch_utils import Conv1D

from unisteer.core.delta import Delta
from unisteer.core.fingerprint import model_fingerprint
from unisteer.core.io import MAX_META_BYTES, MAX_TENSOR_BYTES, read_regular_file
from unisteer.core.sites import block_index_of, site_at_path
from unisteer.core.steering_set import Steerable, SteeringSet, deltas_of
from unisteer.errors import DeltaLoadError, SiteError
from unisteer.files import write_bytes_atomic, write_text_atomic

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."


@dataclass
class PeftExport:
    """What :func:`export_peft` wrote: the folder, each module's rank, and for each local
    weight update its relative SVD error ``‖ΔW − B A‖_F / ‖ΔW‖_F`` (0 for an exact LoRA)."""

    directory: Path
    ranks: dict[str, int] = field(default_factory=dict)
    relative_errors: dict[str, float] = field(default_factory=dict)


def low_rank(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``A`` ``[r, d_in]`` and ``B`` ``[d_out, r]`` with ``B A`` the best rank-``r``
    approximation of ``weight`` (truncated SVD, Eckart–Young), and its relative Frobenius
    error."""
    w = weight.detach().to("cpu", torch.float64)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    r = min(rank, s.shape[0])
    root = s[:r].sqrt()
    b = (u[:, :r] * root).to(torch.float32)
    a = (root[:, None] * vh[:r]).to(torch.float32)
    norm = float(torch.linalg.norm(w))
    error = float(torch.linalg.norm(w - b.double() @ a.double())) / norm if norm > 0 else 0.0
    return a.contiguous(), b.contiguous(), error


def _base_name(model: nn.Module) -> str | None:
    config = getattr(model, "config", None)
    name = getattr(config, "_name_or_path", None) or getattr(model, "name_or_path", None)
    return str(name) if name else None


def check_exportable(model: nn.Module, steerable: Steerable, *, drop_bias: bool = False) -> None:
    """Refuse what a PEFT LoRA adapter cannot hold, saying what would work."""
    for d in deltas_of(steerable):
        if d.kind == "vector":
            raise SiteError(
                f"the vector at {d.site!r} adds a bias, which a LoRA adapter has no place for. "
                "Export it as a llama.cpp control vector (unisteer export gguf, at block outputs) "
                "or a merged checkpoint (unisteer export merged)."
            )
        if d.site_kind == "experts":
            raise SiteError(
                f"the delta at {d.site!r} acts inside fused experts, which PEFT LoRA adapters do "
                "not target in a way vLLM loads; export a merged checkpoint instead."
            )
        module = model.get_submodule(d.site)
        if not isinstance(module, nn.Linear | Conv1D):
            raise SiteError(f"{d.site!r} is a {type(module).__name__}, not a Linear layer")
        bias = d.bias()
        if bias is not None and bool(bias.detach().abs().max() > 0) and not drop_bias:
            raise SiteError(
                f"the local weight update at {d.site!r} has a bias Δb (norm "
                f"{float(bias.detach().norm()):.3g}), which a LoRA adapter cannot hold (PEFT's "
                "lora_bias is refused by vLLM). Pass drop_bias=True (--drop-bias) to export ΔW "
                "alone, or export a merged checkpoint, which keeps both."
            )
    kinds = {type(model.get_submodule(d.site)) is Conv1D for d in deltas_of(steerable)}
    if len(kinds) > 1:
        raise SiteError("PEFT's fan_in_fan_out is one setting: the sites mix Conv1D and Linear")


def export_peft(
    model: nn.Module,
    steerable: Steerable,
    m: float,
    directory: str | Path,
    *,
    rank: int | None = None,
    drop_bias: bool = False,
    base_model_name_or_path: str | None = None,
) -> PeftExport:
    """Write ``m``·``steerable`` as a PEFT LoRA adapter in ``directory``.

    LoRA members are exact; local weight updates are truncated to ``rank`` by SVD (required
    when there is one). The weights are written before the config, each atomically.
    """
    from peft import LoraConfig

    check_exportable(model, steerable, drop_bias=drop_bias)
    if not math.isfinite(m):
        raise ValueError(f"m must be a finite number, got {m}")
    members = deltas_of(steerable)
    if rank is None and any(d.kind == "local_weight" for d in members):
        raise ValueError(
            "a local weight update becomes a LoRA by truncated SVD: give the rank (rank=, --rank)"
        )
    if rank is not None and rank < 1:
        raise ValueError(f"rank must be at least 1, got {rank}")
    out = Path(directory)
    result = PeftExport(out)
    tensors: dict[str, torch.Tensor] = {}
    for d in members:
        if d.kind == "lora":
            a = d.lora_A.detach().to("cpu", torch.float32)
            b = d.lora_B.detach().to("cpu", torch.float32)
            error = 0.0
        else:
            weight = d.weight()
            assert weight is not None and rank is not None
            a, b, error = low_rank(weight, rank)
            result.relative_errors[d.site] = error
        tensors[f"{PREFIX}{d.site}.lora_A.weight"] = a.contiguous()
        tensors[f"{PREFIX}{d.site}.lora_B.weight"] = (float(m) * b).contiguous()
        result.ranks[d.site] = int(a.shape[0])
    ranks = list(result.ranks.values())
    common = Counter(ranks).most_common(1)[0][0]  # ties: the first member's rank
    pattern = {site: r for site, r in result.ranks.items() if r != common}
    config = LoraConfig(
        r=common,
        lora_alpha=common,
        target_modules=sorted(result.ranks),
        rank_pattern=pattern,
        alpha_pattern=dict(pattern),
        lora_dropout=0.0,
        bias="none",
        fan_in_fan_out=type(model.get_submodule(members[0].site)) is Conv1D,
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_model_name_or_path or _base_name(model),
        inference_mode=True,
    )
    meta = config.to_dict()
    meta["target_modules"] = sorted(result.ranks)
    meta["peft_type"] = "LORA"
    meta["task_type"] = "CAUSAL_LM"
    write_bytes_atomic(out / WEIGHTS_FILE, st_save(tensors, metadata={"format": "pt"}))
    write_text_atomic(out / CONFIG_FILE, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return result


def _pattern_value(patterns: dict[str, Any], module: str) -> Any:
    """The value of the first key of ``patterns`` matching ``module`` as PEFT matches them (the
    key as a regular expression for the module path's end), else ``None``."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return None


def _read_config(path: Path) -> dict[str, Any]:
    raw = read_regular_file(path, MAX_META_BYTES, CONFIG_FILE)
    try:
        config = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DeltaLoadError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(config, dict):
        raise DeltaLoadError(f"{path}: expected a JSON object")
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        raise DeltaLoadError(f"{path}: peft_type is {peft_type!r}; only LoRA adapters are affine")
    if config.get("use_dora"):
        raise DeltaLoadError(
            f"{path}: a DoRA adapter rescales each column of W by a learned magnitude, which is "
            "not W + ΔW with a fixed ΔW; merge it with PEFT first (merge_and_unload) or use a "
            "plain LoRA"
        )
    if config.get("lora_bias"):
        raise DeltaLoadError(
            f"{path}: lora_bias adds a trained bias to lora_B; unisteer imports plain LoRA "
            "(W + s·B A) only. Merge it with PEFT first (merge_and_unload)."
        )
    if config.get("modules_to_save"):
        raise DeltaLoadError(
            f"{path}: modules_to_save {config['modules_to_save']} replaces whole modules with "
            "trained copies, which is not a low-rank delta; merge it with PEFT first"
        )
    return config


def import_peft(
    directory: str | Path, model: nn.Module, *, tokenizer: Any | None = None
) -> SteeringSet:
    """A PEFT LoRA adapter as a steering set of LoRA deltas of ``model`` (the scale ``s``
    folded into ``B``, so ``m = 1`` is the adapter as PEFT applies it)."""
    root = Path(directory)
    config_path, weights_path = root / CONFIG_FILE, root / WEIGHTS_FILE
    if not config_path.exists():
        pickles = root / "adapter_model.bin"
        hint = " (adapter_model.bin is a pickle, which is refused)" if pickles.exists() else ""
        raise DeltaLoadError(f"no {CONFIG_FILE} in {root}: not a PEFT adapter{hint}")
    config = _read_config(config_path)
    if not weights_path.exists():
        raise DeltaLoadError(
            f"no {WEIGHTS_FILE} in {root} (pickled adapter_model.bin files are refused)"
        )
    blob = read_regular_file(weights_path, MAX_TENSOR_BYTES, WEIGHTS_FILE)
    try:
        tensors = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise DeltaLoadError(f"{weights_path} is not a valid safetensors file: {e}") from e
    modules: dict[str, dict[str, torch.Tensor]] = {}
    # what makes the adapter more than W + s·B A is named first, whatever the key order
    for key in sorted(tensors):
        if "lora_magnitude_vector" in key:
            raise DeltaLoadError(f"{weights_path}: {key} is a DoRA magnitude; DoRA is refused")
        if "lora_embedding" in key:
            raise DeltaLoadError(f"{weights_path}: {key} is a LoRA on an embedding; not supported")
    for key, value in tensors.items():
        found = re.fullmatch(
            r"(?:base_model\.model\.)?(.+)\.(lora_A|lora_B)(?:\.\w+)?\.weight", key
        )
        if found is None:
            raise DeltaLoadError(f"{weights_path}: tensor {key!r} is not a LoRA A or B matrix")
        modules.setdefault(found.group(1), {})[found.group(2)] = value
    if not modules:
        raise DeltaLoadError(f"{weights_path}: no LoRA tensors")
    alpha = config.get("lora_alpha", 8)
    r_default = config.get("r", 8)
    rslora = bool(config.get("use_rslora"))
    fingerprint = model_fingerprint(model, tokenizer)
    deltas = []
    for path, pair in sorted(modules.items()):
        if set(pair) != {"lora_A", "lora_B"}:
            raise DeltaLoadError(
                f"{weights_path}: {path} has {sorted(pair)}, needs lora_A and lora_B"
            )
        a, b = pair["lora_A"].to(torch.float32), pair["lora_B"].to(torch.float32)
        r = int(a.shape[0])
        if a.dim() != 2 or b.dim() != 2 or b.shape[1] != r:
            raise DeltaLoadError(
                f"{weights_path}: {path} has A {list(a.shape)} and B {list(b.shape)}, not [r, in] "
                "and [out, r]"
            )
        expected_r = _pattern_value(config.get("rank_pattern") or {}, path) or r_default
        if int(expected_r) != r:
            raise DeltaLoadError(
                f"{config_path}: {path} has rank {r}, the config says {expected_r}"
            )
        a_value = _pattern_value(config.get("alpha_pattern") or {}, path)
        scale = float(a_value if a_value is not None else alpha) / (math.sqrt(r) if rslora else r)
        try:
            site = site_at_path(model, path, "lora")
            layer = block_index_of(model, path)
        except SiteError as e:
            raise DeltaLoadError(f"{weights_path}: {path} does not fit this model: {e}") from None
        if (site.d_in, site.d_out) != (a.shape[1], b.shape[0]):
            raise DeltaLoadError(
                f"{weights_path}: {path} maps {a.shape[1]} → {b.shape[0]}, the model's "
                f"{site.d_in} → {site.d_out}"
            )
        d = Delta.lora(
            site.d_in,
            site.d_out,
            r,
            site=path,
            layer=layer,
            fingerprint=fingerprint,
            meta={"source": "peft", "scale": scale},
        )
        with torch.no_grad():
            d.lora_A.copy_(a)
            d.lora_B.copy_(scale * b)
        deltas.append(d)
    meta = {"source": "peft", "directory": str(root)}
    if config.get("base_model_name_or_path"):
        meta["base_model_name_or_path"] = config["base_model_name_or_path"]
    return SteeringSet(deltas, meta=meta, fingerprint=fingerprint)
