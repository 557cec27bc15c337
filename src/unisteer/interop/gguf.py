"""llama.cpp (and repeng) control vectors: GGUF files of one direction per block output.

The layout llama.cpp's loader reads (``common_control_vector_load``): ``general.architecture =
"controlvector"``, ``controlvector.model_hint`` (a string; repeng writes the Hugging Face
``model_type``), ``controlvector.layer_count`` (uint32: how many directions), and one 1-D F32
tensor ``direction.N`` of length ``n_embd`` per steered block. ``direction.N`` is added to the
**output of block N** (0-based, Hugging Face's ``model.layers[N]``), after the block's last
residual add: exactly a unisteer ``vector`` delta at the residual site of layer N. The loader
refuses N = 0 and a file with any bad tensor is *skipped with a log line* (the run goes on
unsteered), so :func:`export_control_vector` refuses everything it would skip, and
:func:`read_control_vector` applies the same rules to files from elsewhere.

The multiplier is folded in (the file holds ``m·v``); llama.cpp's
``--control-vector-scaled FILE:S`` multiplies it again by S.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from unisteer.core.delta import Delta
from unisteer.core.fingerprint import model_fingerprint
from unisteer.core.sites import find_blocks, residual_site
from unisteer.core.steering_set import Steerable, SteeringSet, deltas_of
from unisteer.errors import DeltaLoadError, SiteError
from unisteer.files import write_bytes_atomic

ARCHITECTURE = "controlvector"

#: Hugging Face ``model_type`` → the llama.cpp architecture whose graph adds control vectors
#: (its builder calls ``build_cvec`` after each block), at the llama.cpp commit vendored in
#: llama-cpp-python 0.3.36 (docs/interop.md).
STEERED_FAMILIES: dict[str, str] = {
    "llama": "llama",
    "mistral": "llama",
    "mixtral": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "qwen2_moe": "qwen2moe",
    "qwen3_moe": "qwen3moe",
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gemma3_text": "gemma3",
    "gemma3": "gemma3",
    "phi": "phi2",
    "phi3": "phi3",
    "gpt2": "gpt2",
    "gpt_neox": "gptneox",
    "falcon": "falcon",
    "starcoder2": "starcoder2",
    "olmo": "olmo",
    "olmo2": "olmo2",
    "stablelm": "stablelm",
    "cohere": "command-r",
    "internlm2": "internlm2",
    "bloom": "bloom",
    "mpt": "mpt",
    "granite": "granite",
    "deepseek_v2": "deepseek2",
    "smollm3": "smollm3",
}

#: Families llama.cpp runs without a control-vector hook in their graph (a file would load and
#: change nothing).
UNSTEERED_FAMILIES: dict[str, str] = {
    "gptj": "gptj",
    "minicpm": "minicpm",
    "granitemoe": "granite-moe",
    "phimoe": "phimoe",
    "mamba2": "mamba2",
    "rwkv6": "rwkv6",
    "rwkv7": "rwkv7",
    "plamo2": "plamo2",
    "hunyuan_v1_dense": "hunyuan-dense",
    "lfm2_moe": "lfm2moe",
}


@dataclass(frozen=True)
class ControlVector:
    """A control vector as read from a GGUF file: ``directions[N]`` is added to block N's
    output (``m`` already folded in)."""

    path: Path
    model_hint: str | None
    layer_count: int | None
    directions: dict[int, np.ndarray]

    @property
    def width(self) -> int:
        return int(next(iter(self.directions.values())).shape[0])


def _family(model: nn.Module) -> str:
    return str(getattr(getattr(model, "config", None), "model_type", "") or "")


def check_exportable(model: nn.Module, steerable: Steerable, *, any_family: bool = False) -> None:
    """Refuse what a llama.cpp control vector cannot hold, saying what would work."""
    family = _family(model)
    if family in UNSTEERED_FAMILIES:
        raise SiteError(
            f"llama.cpp runs {family!r} models as {UNSTEERED_FAMILIES[family]!r}, whose graph has "
            "no control-vector hook: a control vector would load and change nothing. Export a "
            "merged checkpoint (unisteer export merged) or steer with unisteer instead."
        )
    if family not in STEERED_FAMILIES and not any_family:
        raise SiteError(
            f"unisteer does not know whether llama.cpp steers {family or 'this'!r} models (known: "
            f"{', '.join(sorted(STEERED_FAMILIES))}). If its llama.cpp graph calls build_cvec, "
            "pass any_family=True (--any-family)."
        )
    _, blocks = find_blocks(model)
    for d in deltas_of(steerable):
        if d.kind != "vector":
            raise SiteError(
                f"the {d.kind} delta at {d.site!r} changes a weight; a llama.cpp control vector "
                "only adds vectors to block outputs. Export it as a PEFT adapter (unisteer export "
                "peft) or a merged checkpoint (unisteer export merged)."
            )
        layer = d.layer if d.layer is not None else -1
        if d.site_kind != "residual" or not 0 <= layer < len(blocks):
            raise SiteError(
                f"the vector at {d.site!r} is not at a block output; llama.cpp adds control "
                "vectors to the output of whole blocks only. Train it at a block output "
                "(site_kind 'residual'), or export a merged checkpoint (unisteer export merged)."
            )
        if d.site != residual_site(model, layer).path:
            raise SiteError(f"the vector at {d.site!r} is not the output of block {layer}")
        if layer == 0:
            raise SiteError(
                f"the vector at {d.site!r} is at the output of block 0, which llama.cpp's loader "
                "refuses (direction.0): train it at layer 1 or later, or export a merged "
                "checkpoint after moving it to a linear site."
            )


def export_control_vector(
    model: nn.Module,
    steerable: Steerable,
    m: float,
    path: str | Path,
    *,
    model_hint: str | None = None,
    any_family: bool = False,
) -> Path:
    """Write ``m``·each vector of ``steerable`` as a llama.cpp / repeng control vector.

    Every member must be a vector at the output of a block N ≥ 1 of a model family whose
    llama.cpp graph applies control vectors (see :func:`check_exportable`). The file is written
    atomically; ``model_hint`` defaults to the model's ``model_type``.
    """
    import gguf

    check_exportable(model, steerable, any_family=any_family)
    if not np.isfinite(m):
        raise ValueError(f"m must be a finite number, got {m}")
    out = Path(path)
    members = sorted(deltas_of(steerable), key=lambda d: int(d.layer or 0))
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "cv.gguf"
        writer = gguf.GGUFWriter(scratch, ARCHITECTURE)
        writer.add_string(f"{ARCHITECTURE}.model_hint", model_hint or _family(model))
        writer.add_uint32(f"{ARCHITECTURE}.layer_count", len(members))
        for d in members:
            v = (float(m) * d.bias_.detach().to("cpu", torch.float32)).numpy()
            writer.add_tensor(f"direction.{d.layer}", np.ascontiguousarray(v, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        write_bytes_atomic(out, scratch.read_bytes())
    return out


def _field_value(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return None
    return field.contents()


def read_control_vector(path: str | Path) -> ControlVector:
    """Read a control vector GGUF, refusing what llama.cpp's loader would skip (a tensor not
    named ``direction.N`` with N ≥ 1, not F32, not 1-D, or of another length than the rest)."""
    import gguf

    p = Path(path)
    try:
        reader = gguf.GGUFReader(p)
    except (OSError, ValueError, KeyError) as e:
        raise DeltaLoadError(f"{p} is not a readable GGUF file: {e}") from e
    arch = _field_value(reader, "general.architecture")
    if arch != ARCHITECTURE:
        raise DeltaLoadError(
            f"{p}: general.architecture is {arch!r}, not {ARCHITECTURE!r}: not a control vector "
            "(a model or a LoRA GGUF?)"
        )
    directions: dict[int, np.ndarray] = {}
    width: int | None = None
    for t in reader.tensors:
        head, _, tail = t.name.partition(".")
        if head != "direction" or not tail.isdigit():
            raise DeltaLoadError(f"{p}: tensor {t.name!r} is not named direction.N")
        layer = int(tail)
        if layer == 0:
            raise DeltaLoadError(f"{p}: direction.0 (block 0), which llama.cpp refuses")
        if t.tensor_type != gguf.GGMLQuantizationType.F32:
            raise DeltaLoadError(f"{p}: {t.name} is {t.tensor_type.name}, not F32")
        data = np.asarray(t.data, dtype=np.float32).reshape(-1)
        if len([n for n in t.shape if n > 1]) > 1:
            raise DeltaLoadError(f"{p}: {t.name} has shape {list(t.shape)}, not 1-D")
        if width is not None and data.shape[0] != width:
            raise DeltaLoadError(f"{p}: {t.name} has length {data.shape[0]}, the others {width}")
        width = int(data.shape[0])
        if not np.isfinite(data).all():
            raise DeltaLoadError(f"{p}: {t.name} holds NaN or infinite values")
        directions[layer] = data.copy()
    if not directions:
        raise DeltaLoadError(f"{p}: no direction tensors")
    hint = _field_value(reader, f"{ARCHITECTURE}.model_hint")
    count = _field_value(reader, f"{ARCHITECTURE}.layer_count")
    return ControlVector(
        p, None if hint is None else str(hint), None if count is None else int(count), directions
    )


def import_control_vector(
    path: str | Path, model: nn.Module, *, tokenizer: Any | None = None
) -> SteeringSet:
    """A llama.cpp / repeng control vector as a steering set of vectors at block outputs of
    ``model`` (``m = 1`` reproduces the file as llama.cpp applies it at scale 1)."""
    cv = read_control_vector(path)
    _, blocks = find_blocks(model)
    fingerprint = model_fingerprint(model, tokenizer)
    deltas = []
    for layer, v in sorted(cv.directions.items()):
        if layer >= len(blocks):
            raise DeltaLoadError(
                f"{cv.path}: direction.{layer} is past the model's last block ({len(blocks) - 1})"
            )
        site = residual_site(model, layer)
        if v.shape[0] != site.d_out:
            raise DeltaLoadError(
                f"{cv.path}: directions have width {v.shape[0]}, the model's blocks {site.d_out}"
            )
        d = Delta.vector(
            site.d_out,
            site=site.path,
            layer=layer,
            fingerprint=fingerprint,
            meta={"source": "gguf", "file": str(cv.path)},
        )
        with torch.no_grad():
            d.bias_.copy_(torch.from_numpy(v))
        deltas.append(d)
    meta = {"source": "gguf", "file": str(cv.path), "model_hint": cv.model_hint}
    return SteeringSet(deltas, meta=meta, fingerprint=fingerprint)
