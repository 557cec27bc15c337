"""steering-vectors' ``SteeringVector`` imports: its ``layer_activations`` added to block
outputs, from an object or a safetensors file, equal a hand-written hook; what is not at a
block output, or does not fit the model, is refused."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import unisteer
from unisteer.errors import DeltaLoadError
from unisteer.interop.steering_vectors import import_steering_vector

from tiny_models import HIDDEN, LAYERS, tiny_model


@dataclass
class SteeringVector:  # the shape of steering_vectors.SteeringVector
    layer_activations: dict[int, torch.Tensor]
    layer_type: str = "decoder_block"
    extra: dict[str, str] = field(default_factory=dict)


def activations() -> dict[int, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {1: torch.randn(HIDDEN, generator=g), -1: torch.randn(HIDDEN, generator=g)}


def by_hand(model: torch.nn.Module, vectors: dict[int, torch.Tensor], m: float) -> torch.Tensor:
    """What steering-vectors computes: m·v added to each listed block's hidden-state output."""
    blocks = model.model.layers
    handles = []
    for layer, v in vectors.items():

        def add(_mod: object, _inp: object, out: object, v: torch.Tensor = v) -> object:
            if isinstance(out, tuple):
                return (out[0] + m * v, *out[1:])
            return out + m * v  # type: ignore[operator]

        handles.append(blocks[layer].register_forward_hook(add))
    try:
        return logits(model)
    finally:
        for h in handles:
            h.remove()


def logits(model: torch.nn.Module) -> torch.Tensor:
    x = torch.randint(3, 96, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(input_ids=x).logits


@pytest.mark.parametrize("from_file", [False, True])
def test_import_equals_the_hand_written_hook(from_file: bool, tmp_path: Path) -> None:
    model = tiny_model("llama")
    acts = activations()
    if from_file:
        path = tmp_path / "sv.safetensors"
        save_file({f"layer.{k}": v for k, v in acts.items()}, path)
        s = import_steering_vector(path, model)
    else:
        s = import_steering_vector(SteeringVector(acts), model)
    assert s.sites == [f"model.layers.{i}" for i in (1, LAYERS - 1)]
    with unisteer.steer(model, s, m=2.0):
        ours = logits(model)
    torch.testing.assert_close(ours, by_hand(model, acts, 2.0), rtol=1e-6, atol=1e-6)
    # it saves, loads and sweeps like our own
    unisteer.save_steering_set(s, tmp_path / "set")
    back = unisteer.load_steerable(tmp_path / "set", model)
    with unisteer.steer(model, back, m=2.0):
        torch.testing.assert_close(logits(model), ours, rtol=0, atol=0)


def test_layer_type_other_than_block_output_is_refused() -> None:
    model = tiny_model("llama")
    with pytest.raises(DeltaLoadError, match=r"layer_type 'mlp'.*not a block output"):
        import_steering_vector(SteeringVector(activations(), layer_type="mlp"), model)


def test_bad_length_and_out_of_range_layers_are_refused(tmp_path: Path) -> None:
    model = tiny_model("llama")
    with pytest.raises(DeltaLoadError, match="length 7, the model's width is 32"):
        import_steering_vector(SteeringVector({1: torch.ones(7)}), model)
    with pytest.raises(DeltaLoadError, match=f"layer {LAYERS} is outside the model's {LAYERS}"):
        import_steering_vector(SteeringVector({LAYERS: torch.ones(HIDDEN)}), model)
    with pytest.raises(DeltaLoadError, match="no layer_activations"):
        import_steering_vector(object(), model)
    path = tmp_path / "twice.safetensors"
    save_file({"a.1": torch.ones(HIDDEN), "b.1": torch.ones(HIDDEN)}, path)
    with pytest.raises(DeltaLoadError, match=r"twice\.safetensors.*layer 1 twice"):
        import_steering_vector(path, model)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(DeltaLoadError, match=r"bad\.safetensors"):
        import_steering_vector(bad, model)
