"""steering-vectors' ``SteeringVector``: ``layer_activations`` (block index → vector) added to
the outputs of decoder blocks (``layer_type="decoder_block"``), scaled by one multiplier.

That is a unisteer steering set of vectors at the residual sites of those blocks, read from
an object with ``layer_activations`` (and ``layer_type``), or from a safetensors file whose
tensor names are the block indices (``"12"``, or ending in ``".12"``) and whose metadata may
name the ``layer_type``. Vectors steering-vectors puts elsewhere (``"mlp"``,
``"self_attn"``, a layer norm) add to a module's output that is not a block output: refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from unisteer.core.delta import Delta
from unisteer.core.fingerprint import model_fingerprint
from unisteer.core.io import MAX_TENSOR_BYTES, read_regular_file
from unisteer.core.sites import find_blocks, residual_site
from unisteer.core.steering_set import SteeringSet
from unisteer.errors import DeltaLoadError

BLOCK_OUTPUT = "decoder_block"


def _read_file(path: Path) -> tuple[dict[int, torch.Tensor], str]:
    read_regular_file(path, MAX_TENSOR_BYTES, "safetensors file")  # a regular file, not too big
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as e:
        raise DeltaLoadError(f"{path} is not a valid safetensors file: {e}") from e
    layers: dict[int, torch.Tensor] = {}
    for key, value in tensors.items():
        tail = key.rsplit(".", 1)[-1]
        if not tail.lstrip("-").isdigit():
            raise DeltaLoadError(f"{path}: tensor {key!r} is not named by a block index")
        if int(tail) in layers:
            raise DeltaLoadError(f"{path}: tensor {key!r} gives layer {int(tail)} twice")
        layers[int(tail)] = value
    return layers, str(meta.get("layer_type", BLOCK_OUTPUT))


def import_steering_vector(
    source: Any, model: nn.Module, *, tokenizer: Any | None = None
) -> SteeringSet:
    """A steering-vectors ``SteeringVector`` (or a safetensors file of its
    ``layer_activations``) as a steering set of ``model``; ``m`` is its ``multiplier``."""
    if isinstance(source, str | Path):
        where = str(source)
        layers, layer_type = _read_file(Path(source))
    else:
        where = type(source).__name__
        raw = getattr(source, "layer_activations", None)
        if not isinstance(raw, dict):
            raise DeltaLoadError(f"{where} has no layer_activations dict: not a SteeringVector")
        layers = {int(k): v for k, v in raw.items()}
        layer_type = str(getattr(source, "layer_type", BLOCK_OUTPUT))
    if layer_type != BLOCK_OUTPUT:
        raise DeltaLoadError(
            f"{where}: layer_type {layer_type!r} adds the vectors to the output of each block's "
            f"{layer_type} module, which is not a block output; unisteer imports "
            f"{BLOCK_OUTPUT!r} vectors (train them with layer_type='decoder_block')"
        )
    if not layers:
        raise DeltaLoadError(f"{where}: no layer activations")
    _, blocks = find_blocks(model)
    n = len(blocks)
    fingerprint = model_fingerprint(model, tokenizer)
    deltas = []
    resolved: dict[int, tuple[int, Any]] = {}
    for layer, vector in layers.items():
        index = layer + n if layer < 0 else layer  # steering-vectors counts -1 as the last block
        if not 0 <= index < n:
            raise DeltaLoadError(f"{where}: layer {layer} is outside the model's {n} blocks")
        if index in resolved:
            raise DeltaLoadError(f"{where}: layers {resolved[index][0]} and {layer} are one block")
        resolved[index] = (layer, vector)
    for index, (layer, vector) in sorted(resolved.items()):
        site = residual_site(model, index)
        v = torch.as_tensor(vector).detach().to("cpu", torch.float32).reshape(-1)
        if v.shape[0] != site.d_out:
            raise DeltaLoadError(
                f"{where}: the vector for layer {layer} has length {v.shape[0]}, the model's "
                f"width is {site.d_out}"
            )
        if not bool(torch.isfinite(v).all()):
            raise DeltaLoadError(f"{where}: the vector for layer {layer} is not finite")
        d = Delta.vector(
            site.d_out,
            site=site.path,
            layer=index,
            fingerprint=fingerprint,
            meta={"source": "steering-vectors"},
        )
        with torch.no_grad():
            d.bias_.copy_(v)
        deltas.append(d)
    return SteeringSet(
        deltas, meta={"source": "steering-vectors", "from": where}, fingerprint=fingerprint
    )
