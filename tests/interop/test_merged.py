"""Merged checkpoints, checked by the real consumer: a fresh ``AutoModelForCausalLM.
from_pretrained`` of the exported folder computes the steered logits; what a checkpoint cannot
hold (a vector at a block output, a Δb without a bias switch, an offloaded model) is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import unisteer
from unisteer.core.steering_set import SteeringSet
from unisteer.errors import SiteError, UsageError
from unisteer.interop.merged import bias_switches, export_merged

from conftest import randomize
from tiny_models import tiny_model
from tiny_tokenizers import word_tokenizer


def logits(model: torch.nn.Module) -> torch.Tensor:
    x = torch.randint(3, 96, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(input_ids=x).logits


def weights_set(model: torch.nn.Module) -> SteeringSet:
    lora = randomize(unisteer.new_delta(model, "lora", 1, rank=3), 1, 0.3)
    local = randomize(unisteer.new_delta(model, "local_weight", 2), 2, 0.1)  # ΔW and Δb
    return SteeringSet([lora, local])


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_fresh_from_pretrained_reproduces_the_steered_logits(arch: str, tmp_path: Path) -> None:
    model = tiny_model(arch)
    s = weights_set(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with unisteer.steer(model, s, m=1.5):
        ours = logits(model)
    out = export_merged(model, s, 1.5, tmp_path / "merged", tokenizer=word_tokenizer())
    assert (out / "model.safetensors").is_file() and (out / "tokenizer_config.json").is_file()
    fresh = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    torch.testing.assert_close(logits(fresh), ours, rtol=1e-5, atol=1e-5)
    assert not torch.equal(logits(fresh), logits(model))
    AutoTokenizer.from_pretrained(out)  # the tokenizer came along
    config = json.loads((out / "config.json").read_text())
    if arch == "llama":  # down_proj has no bias: the checkpoint switched mlp_bias on
        assert config["mlp_bias"] is True
        assert float(fresh.model.layers[0].mlp.down_proj.bias.abs().max()) == 0.0
    # the user's model is untouched
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_m_zero_is_the_base_model_bit_for_bit(tmp_path: Path) -> None:
    model = tiny_model("gpt2")
    out = export_merged(model, weights_set(model), 0.0, tmp_path / "m0")
    fresh = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert torch.equal(logits(fresh), logits(model))


def test_a_vector_at_a_block_output_is_refused(tmp_path: Path) -> None:
    model = tiny_model("llama")
    v = randomize(unisteer.new_delta(model, "vector", 1), 1)
    with pytest.raises(SiteError, match=r"llama\.cpp"):
        export_merged(model, v, 1.0, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_a_bias_without_a_switch_is_refused(tmp_path: Path) -> None:
    model = tiny_model("qwen2")  # qwen2 has no config key that gives down_proj a bias
    local = randomize(unisteer.new_delta(model, "local_weight", 1), 1, 0.1)
    with pytest.raises(SiteError, match="no switch that gives it one"):
        export_merged(model, local, 1.0, tmp_path / "x")
    assert not (tmp_path / "x").exists() and not list(tmp_path.iterdir())
    # without Δb it merges
    with torch.no_grad():
        local.bias_.zero_()
    export_merged(model, local, 1.0, tmp_path / "y")


def test_llama_switch_is_found_on_meta() -> None:
    model = tiny_model("llama")
    assert bias_switches(model, ["model.layers.1.mlp.down_proj"]) == {"mlp_bias": True}


def test_an_offloaded_model_is_refused(tmp_path: Path) -> None:
    from accelerate import disk_offload

    model = tiny_model("llama")
    s = weights_set(model)
    disk_offload(model, offload_dir=str(tmp_path / "offload"))
    with pytest.raises(SiteError, match="is not in memory"):
        export_merged(model, s, 1.0, tmp_path / "x")
    with pytest.raises(SiteError, match="is not in memory"):
        unisteer.merged_copy(model, s, 1.0)


def test_a_non_empty_folder_is_refused(tmp_path: Path) -> None:
    model = tiny_model("gpt2")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        export_merged(model, weights_set(model), 1.0, tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
