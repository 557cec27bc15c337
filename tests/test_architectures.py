"""The architecture matrix's checks that no other module owns: the model is left exactly as it
was by everything unisteer does to it, half precision takes the fast paths, and deltas on a
mixture of experts' fused projection train, sweep, save, load, share and merge.

The other columns of the matrix (sites found, m = 0 bit-exact for every kind, fast sweep =
naive sweep, cached training = naive training, KV-cached generation = the uncached loop for
every position mode) are parametrized over the same ``ARCHS`` in the modules that own them;
``scripts/architecture_table.py`` runs them all and writes the README's table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import unisteer
from unisteer import load_delta, merged_copy, new_delta, steer, sweep, train
from unisteer.core.io import save_delta
from unisteer.generation import generate
from unisteer.training.batches import prepare, row_scores
from unisteer.training.objectives import make_objective
from unisteer.training.trainer import multiplier_drawer

from conftest import make_delta, randomize
from tiny_models import ARCHS, EXPERTS, MOE, tiny_model
from tiny_pairs import random_pairs
from tiny_tokenizers import CHATML, word_tokenizer

#: The subset of the matrix also run in bfloat16 (dense, ALiBi, logit scale, MoE).
HALF = ("llama", "gpt2", "bloom", "cohere", "gemma2", "qwen2_moe")


@pytest.fixture
def tok() -> Any:
    return word_tokenizer(chat_template=CHATML)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def hooks_left(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("arch", ARCHS)
def test_state_dict_unchanged_by_everything(arch: str, tok: Any) -> None:
    """Steering, a fast sweep, cached training, generation and merging leave every tensor of
    the model bit for bit as it was, and no hook behind."""
    model = tiny_model(arch)
    before = snapshot(model)
    pairs = random_pairs(4)
    for kind in ("vector", "lora", "local_weight"):
        delta = make_delta(model, kind, layer=1)
        with steer(model, delta, m=1.5):
            model(input_ids=torch.tensor([[5, 6, 7]]))
        sweep(model, tok, pairs, delta, [0.0, 1.0], progress=False)
        generate(model, tok, ["hello world"], delta=delta, m=1.0, max_new_tokens=3)
        if delta.site_kind != "residual":
            merged_copy(model, delta, 1.0)
    site = EXPERTS.get(arch)
    train(
        model, tok, pairs, kind="lora", objective="split", layer=1, site=site, epochs=1,
        progress=False,
    )  # fmt: skip
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert hooks_left(model) == 0


@pytest.mark.parametrize("arch", HALF)
@pytest.mark.parametrize("kind", ["vector", "lora"])
def test_half_precision_takes_the_fast_paths(arch: str, kind: str, tok: Any) -> None:
    """A bfloat16 model uses the fast sweep and the cached trainer (held to the naive path's
    own rounding, see unisteer.replay.check), and they agree with the naive paths to the
    rounding of bfloat16, not of float32."""
    model = tiny_model(arch, dtype=torch.bfloat16)
    delta = make_delta(model, kind, layer=1)
    pairs = random_pairs(9)
    ms = [-2.0, 0.0, 1.0, 3.0]
    fast = sweep(model, tok, pairs, delta, ms, progress=False, max_pairs_per_batch=4)
    naive = sweep(model, tok, pairs, delta, ms, progress=False, method="naive")
    assert fast.meta["method"] in ("prefix", "stacked")
    cols = ["loss_pos", "loss_neg", "pref_odds", "util_odds"]
    assert np.abs(fast.table[cols].to_numpy() - naive.table[cols].to_numpy()).max() <= 2e-2
    obj = make_objective("split")
    losses = []
    for method in ("cached", "naive"):
        batches, runner = prepare(model, tok, pairs, delta, batch_size=3, seed=0, method=method)  # type: ignore[arg-type]
        assert (runner is not None) == (method == "cached")
        draw = multiplier_drawer([0.5, 1.0], torch.Generator().manual_seed(5))
        rows = obj.rows(batches[0].n_pairs, draw, delta.kind)
        with torch.no_grad():
            losses.append(float(obj.loss(rows, row_scores(model, batches[0], delta, rows, runner))))
    assert losses[0] == pytest.approx(losses[1], rel=1e-2, abs=1e-2)


@pytest.mark.parametrize("arch", MOE)
@pytest.mark.parametrize("kind", ["lora", "local_weight"])
def test_expert_deltas_train_save_load_and_merge(
    arch: str, kind: str, tok: Any, tmp_path: Path
) -> None:
    model = tiny_model(arch)
    pairs = random_pairs(8)
    delta = train(
        model, tok, pairs, kind=kind, objective="sft", layer=1, site=EXPERTS[arch], epochs=3,  # type: ignore[arg-type]
        lr=0.05, multipliers=[1.0], progress=False,
    )  # fmt: skip
    history = delta.meta["history"]
    assert delta.site_kind == "experts" and delta.experts == 4 and delta.per_expert
    assert delta.meta["method"] == "cached"
    assert history[-1]["loss"] < history[0]["loss"]
    dw = delta.weight()
    assert dw is not None and dw.shape == (4, delta.d_out, delta.d_in) and delta.bias() is None
    back = load_delta(save_delta(delta, tmp_path / "d"), model=model)
    assert back.site_kind == "experts" and back.experts == 4 and back.per_expert
    for name, t in delta.tensors().items():
        assert torch.equal(back.tensors()[name], t)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad(), steer(model, back, m=2.0):
        steered = model(input_ids=ids).logits
    with torch.no_grad():
        merged = merged_copy(model, back, 2.0)(input_ids=ids).logits
        plain = model(input_ids=ids).logits
    torch.testing.assert_close(steered, merged, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(steered, plain, atol=1e-4)


@pytest.mark.parametrize("arch", MOE)
def test_a_shared_expert_delta_equals_the_same_delta_copied_to_every_expert(arch: str) -> None:
    model = tiny_model(arch)
    shared = randomize(
        new_delta(model, "local_weight", 1, site=EXPERTS[arch], per_expert=False), 1, 0.3
    )
    assert shared.weight_.shape == (shared.d_out, shared.d_in)
    each = new_delta(model, "local_weight", 1, site=EXPERTS[arch])
    with torch.no_grad():
        each.weight_.copy_(shared.weight_.detach().expand_as(each.weight_))
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        with steer(model, shared, m=1.5):
            a = model(input_ids=ids).logits
        with steer(model, each, m=1.5):
            b = model(input_ids=ids).logits
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="acts inside the experts"):
        shared(torch.zeros(2, shared.d_in))
    with pytest.raises(unisteer.SiteError):
        new_delta(model, "vector", 1, site=EXPERTS[arch])
