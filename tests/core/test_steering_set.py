"""Steering sets: several deltas under one m steer, sweep, generate, merge and save like one."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import pytest
import torch

import unisteer
from unisteer.core.io import load_steerable, load_steering_set, save_steering_set
from unisteer.core.sites import replay_start
from unisteer.core.steering_set import SteeringSet
from unisteer.errors import DeltaLoadError, SiteError, SteeringError

from conftest import randomize
from tiny_models import tiny_model
from tiny_pairs import random_pairs
from tiny_tokenizers import word_tokenizer


def ids() -> torch.Tensor:
    return torch.randint(3, 96, (3, 9), generator=torch.Generator().manual_seed(4))


def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=x).logits


def mixed_set(model: torch.nn.Module) -> SteeringSet:
    """A vector at block 1's output, a LoRA in block 2 and a local update in block 3."""
    v = randomize(unisteer.new_delta(model, "vector", 1), 1, 0.5)
    lo = randomize(unisteer.new_delta(model, "lora", 2, rank=2), 2, 0.3)
    lw = randomize(unisteer.new_delta(model, "local_weight", 3), 3, 0.1)
    return SteeringSet([v, lo, lw], meta={"note": "test"})


def test_set_is_its_members_under_one_m(llama: torch.nn.Module) -> None:
    s = mixed_set(llama)
    x = ids()
    base = logits(llama, x)
    with unisteer.steer(llama, s, m=0.0):
        assert torch.equal(logits(llama, x), base)  # m = 0 is the base model, bit for bit
    with unisteer.steer(llama, s, m=1.7):
        together = logits(llama, x)
    with ExitStack() as stack:  # each member under its own Steering context
        for d in s:
            stack.enter_context(unisteer.steer(llama, d, m=1.7))
        separately = logits(llama, x)
    torch.testing.assert_close(together, separately, rtol=0, atol=0)
    assert not torch.allclose(together, base, atol=1e-3)
    assert torch.equal(logits(llama, x), base)  # hooks gone


def test_replay_starts_at_the_lowest_block(llama: torch.nn.Module) -> None:
    s = mixed_set(llama)
    assert replay_start(llama, list(s)) == (1, "model.layers.1")
    both = [s[0], unisteer.new_delta(llama, "lora", 1, rank=2)]  # block 1: output and inside
    assert replay_start(llama, both) == (1, None)
    assert replay_start(llama, [s[2]]) == (3, None)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_sweep_of_a_set_matches_the_naive_path(arch: str) -> None:
    model = tiny_model(arch)
    s = mixed_set(model)
    tok = word_tokenizer()
    pairs = random_pairs(6, seed=3)
    ms = [-1.0, 0.0, 0.5, 1.5]
    fast = unisteer.sweep(model, tok, pairs, s, ms, progress=False)
    naive = unisteer.sweep(model, tok, pairs, s, ms, progress=False, method="naive")
    assert fast.meta["method"] in ("prefix", "stacked")
    assert fast.meta["delta"]["kind"] == "set"
    for col in ("loss_pos", "loss_neg"):
        a, b = fast.table[col].to_numpy(), naive.table[col].to_numpy()
        assert abs(a - b).max() <= 1e-4 + 1e-6 * abs(b).max()
    at0 = fast.table[fast.table["m"] == 0.0]
    plain = unisteer.sweep(model, tok, pairs, None, [0.0], progress=False).table
    assert abs(at0["loss_pos"].to_numpy() - plain["loss_pos"].to_numpy()).max() < 1e-4


def test_generate_with_a_set(llama: torch.nn.Module) -> None:
    tok = word_tokenizer()
    s = mixed_set(llama)
    prompts = ["the cat sat", "a dog ran far"]
    base = unisteer.generate(llama, tok, prompts, max_new_tokens=6)
    steered = unisteer.generate(llama, tok, prompts, delta=s, m=3.0, max_new_tokens=6)
    as_list = unisteer.generate(llama, tok, prompts, delta=list(s), m=3.0, max_new_tokens=6)
    assert steered == as_list
    assert steered != base
    assert unisteer.generate(llama, tok, prompts, delta=s, m=0.0, max_new_tokens=6) == base


def test_merged_copy_of_a_set(llama: torch.nn.Module) -> None:
    s = SteeringSet(list(mixed_set(llama))[1:])  # weights only: no residual vector
    x = ids()
    with unisteer.steer(llama, s, m=-1.2):
        steered = logits(llama, x)
    merged = unisteer.merged_copy(llama, s, -1.2)
    torch.testing.assert_close(logits(merged, x), steered, rtol=1e-4, atol=1e-4)
    with pytest.raises(SiteError, match="residual output"):
        unisteer.merged_copy(llama, mixed_set(llama), 1.0)


def test_merging_refuses_offloaded_weights(llama: torch.nn.Module, tmp_path: Path) -> None:
    from accelerate import dispatch_model

    s = SteeringSet(list(mixed_set(llama))[1:])
    device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu"}
    device_map.update({"model.layers.2": "disk", "model.layers.3": "disk"})
    device_map.update({"model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"})
    dispatched = dispatch_model(llama, device_map=device_map, offload_dir=str(tmp_path / "off"))
    assert any(p.device.type == "meta" for p in dispatched.parameters())
    with pytest.raises(SiteError, match=r"not in memory.*meta"):
        unisteer.merged_copy(dispatched, s, 1.0)


def test_save_and_load_round_trip(llama: torch.nn.Module, tmp_path: Path) -> None:
    tok = word_tokenizer()
    s = mixed_set(llama)
    save_steering_set(s, tmp_path / "set")
    back = load_steering_set(tmp_path / "set", llama)
    assert isinstance(load_steerable(tmp_path / "set"), SteeringSet)
    assert isinstance(load_steerable(tmp_path / "set" / "steering_set.json"), SteeringSet)
    assert back.meta == {"note": "test"} and back.sites == s.sites
    for a, b in zip(s, back, strict=True):
        assert a.kind == b.kind and a.layer == b.layer
        for name, t in a.tensors().items():
            assert torch.equal(t, b.tensors()[name])
    other = tiny_model("mistral")
    with pytest.raises(DeltaLoadError, match="made for another model"):
        load_steering_set(tmp_path / "set", other, tokenizer=tok)


def test_damaged_sets_are_refused(llama: torch.nn.Module, tmp_path: Path) -> None:
    s = mixed_set(llama)
    folder = save_steering_set(s, tmp_path / "set")
    meta_path = folder / "steering_set.json"
    meta = json.loads(meta_path.read_text())
    blob = (folder / "steering_set.safetensors").read_bytes()
    (folder / "steering_set.safetensors").write_bytes(blob[:-8] + b"\0" * 8)
    with pytest.raises(DeltaLoadError, match="does not match the hash"):
        load_steering_set(folder)
    (folder / "steering_set.safetensors").write_bytes(blob)
    meta["members"][1]["rank"] = 5
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DeltaLoadError, match=r"lora_A. has shape.*member 1"):
        load_steering_set(folder)
    meta["members"] = []
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DeltaLoadError, match="'members' should be a non-empty list"):
        load_steering_set(folder)
    with pytest.raises(DeltaLoadError, match="not a saved steering set"):
        load_steering_set(tmp_path)


def test_a_set_refuses_two_deltas_at_one_site(llama: torch.nn.Module) -> None:
    a = unisteer.new_delta(llama, "vector", 1)
    with pytest.raises(SteeringError, match="one delta per site"):
        SteeringSet([a, unisteer.new_delta(llama, "vector", 1)])
    with pytest.raises(SteeringError, match="at least one"):
        SteeringSet([])
    other = unisteer.new_delta(tiny_model("gpt2"), "vector", 2)
    with pytest.raises(SteeringError, match="different models"):
        SteeringSet([a, other])
