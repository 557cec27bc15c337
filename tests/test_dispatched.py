"""A tiny model dispatched over the CPU and disk (offloaded blocks, weights on ``meta`` between
calls) gives the numbers of the same model undispatched: the sweep, training, generation and
saved deltas; merging refuses it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import unisteer
from unisteer import load_model
from unisteer.core.merge import merged_copy
from unisteer.errors import SiteError, SteeringError
from unisteer.generation import generate_detailed
from unisteer.interop.merged import export_merged
from unisteer.replay.recorder import Recorder
from unisteer.scoring.sweep import sweep
from unisteer.training.objectives import diffmean
from unisteer.training.trainer import train

from conftest import make_delta
from tiny_models import tiny_model
from tiny_pairs import random_pairs
from tiny_tokenizers import CHATML, word_tokenizer

#: Blocks 1 and 3 and the unembedding offloaded to disk, the rest on the CPU.
PLAN = {
    "model.embed_tokens": "cpu",
    "model.rotary_emb": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "disk",
    "model.layers.2": "cpu",
    "model.layers.3": "disk",
    "model.norm": "cpu",
    "lm_head": "disk",
}
MS = [-2.0, -1.0, 0.0, 1.0, 2.0]


def _load(directory: Path, arch: str, plan: dict[str, str]) -> tuple[Any, Any, Any]:
    path = directory / arch
    tiny_model(arch).save_pretrained(path)
    word_tokenizer(chat_template=CHATML).save_pretrained(path)
    plain, tok = load_model(str(path))
    dispatched, _ = load_model(str(path), device_map=plan, offload_folder=directory / "offload")
    return plain, dispatched, tok


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Any]:
    """(the model, the same model dispatched by PLAN, its tokenizer)."""
    return _load(tmp_path_factory.mktemp("dispatched"), "llama", PLAN)


def test_the_plan_offloads_blocks(models: tuple[Any, Any, Any]) -> None:
    _, dispatched, _ = models
    assert dispatched.model.layers[1].mlp.down_proj.weight.device.type == "meta"
    assert dispatched.lm_head.weight.device.type == "meta"


@pytest.mark.parametrize(("kind", "layer"), [("lora", 1), ("vector", 1), ("local_weight", 2)])
def test_sweep_matches_the_undispatched_model(
    kind: str, layer: int, models: tuple[Any, Any, Any]
) -> None:
    plain, dispatched, tok = models
    delta = make_delta(plain, kind, layer=layer)
    pairs = random_pairs(6, seed=3)
    want = sweep(plain, tok, pairs, delta, MS, progress=False)
    got = sweep(dispatched, tok, pairs, delta, MS, progress=False)
    assert got.meta["method"] == want.meta["method"] != "naive"
    cols = ["loss_pos", "loss_neg", "pref_odds"]
    assert (got.table[cols] - want.table[cols]).abs().to_numpy().max() <= 1e-6
    naive = sweep(dispatched, tok, pairs, delta, MS, progress=False, method="naive")
    assert (naive.table[cols] - want.table[cols]).abs().to_numpy().max() <= 1e-4


def test_replay_head_runs_an_offloaded_unembedding(models: tuple[Any, Any, Any]) -> None:
    plain, dispatched, _ = models
    ids = torch.tensor([[5, 6, 7, 8]])
    out = []
    for model in (plain, dispatched):
        rec = Recorder(model, 2)
        rec.forward(input_ids=ids)
        h = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
        out.append(rec.logprobs(h, torch.tensor([3, 4, 5])))
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=1e-9)


@pytest.mark.parametrize("kind", ["lora", "vector"])
def test_cached_training_matches_the_undispatched_model(
    kind: str, models: tuple[Any, Any, Any]
) -> None:
    plain, dispatched, tok = models
    pairs = random_pairs(8)
    kw: dict[str, Any] = dict(
        kind=kind, objective="split", layer=1, epochs=2, lr=0.05, multipliers=[0.5, 1.0],
        batch_size=4, progress=False,
    )  # fmt: skip
    want = train(plain, tok, pairs, **kw)
    got = train(dispatched, tok, pairs, **kw)
    assert got.meta["method"] == "cached"
    for name, tensor in want.tensors().items():
        torch.testing.assert_close(got.tensors()[name], tensor, rtol=0, atol=1e-6)
    assert dispatched.model.layers[1].mlp.down_proj.weight.device.type == "meta"
    assert all(p.grad is None for p in dispatched.parameters())


def test_diffmean_matches_the_undispatched_model(models: tuple[Any, Any, Any]) -> None:
    plain, dispatched, tok = models
    pairs = random_pairs(6)
    want = diffmean(plain, tok, pairs, layer=3)
    got = diffmean(dispatched, tok, pairs, layer=3)
    torch.testing.assert_close(got.bias_, want.bias_, rtol=0, atol=1e-7)


def test_generations_match_the_undispatched_model(models: tuple[Any, Any, Any]) -> None:
    plain, dispatched, tok = models
    delta = make_delta(plain, "lora", layer=1)
    prompts = ["hello world", "the sea is blue , i like it", "good day"]
    outputs = []
    for kw in ({}, {"delta": delta, "m": 1.5}):
        want = generate_detailed(plain, tok, prompts, max_new_tokens=5, **kw)  # type: ignore[arg-type]
        got = generate_detailed(dispatched, tok, prompts, max_new_tokens=5, **kw)  # type: ignore[arg-type]
        assert [g.token_ids for g in got] == [g.token_ids for g in want]
        outputs.append([g.token_ids for g in got])
    assert outputs[0] != outputs[1]


def test_saved_delta_loads_into_the_dispatched_model(
    models: tuple[Any, Any, Any], tmp_path: Path
) -> None:
    plain, dispatched, _ = models
    delta = make_delta(plain, "local_weight", layer=1)
    path = unisteer.save_delta(delta, tmp_path / "d")
    back = unisteer.load_delta(path, model=dispatched)
    for name, tensor in delta.tensors().items():
        assert torch.equal(back.tensors()[name], tensor)


def test_merging_a_dispatched_model_is_refused(
    models: tuple[Any, Any, Any], tmp_path: Path
) -> None:
    plain, dispatched, tok = models
    delta = make_delta(plain, "local_weight", layer=1)
    with pytest.raises(SiteError, match="not in memory"):
        merged_copy(dispatched, delta)
    with pytest.raises(SiteError, match="not in memory"):
        export_merged(dispatched, delta, 1.0, tmp_path / "merged", tokenizer=tok)
    assert not (tmp_path / "merged").exists()


def test_a_delta_inside_offloaded_experts_is_refused(tmp_path: Path) -> None:
    plain, dispatched, _ = _load(tmp_path, "mixtral", PLAN)
    delta = make_delta(plain, "lora", layer=1)
    assert delta.site_kind == "experts"
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(SteeringError, match="offloaded"), unisteer.steer(dispatched, delta):
        dispatched(input_ids=ids)
    # In memory (block 2 is on the CPU), the same kind of delta steers as undispatched.
    delta = make_delta(plain, "lora", layer=2)
    with torch.no_grad():
        with unisteer.steer(plain, delta, m=2.0):
            want = plain(input_ids=ids).logits
        with unisteer.steer(dispatched, delta, m=2.0):
            got = dispatched(input_ids=ids).logits
        unsteered = dispatched(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert (got - unsteered).abs().max() > 1e-3
