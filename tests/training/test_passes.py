"""A minibatch too big for the blocks' devices runs in passes of fewer rows (checkpointed), and
gives the loss, the gradients and the trained delta of one pass."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch

import unisteer.model.memory as memory
from unisteer.model.memory import row_bytes
from unisteer.training.batches import prepare, row_scores, rows_per_pass, scores
from unisteer.training.objectives import make_objective
from unisteer.training.trainer import multiplier_drawer, train

from conftest import make_delta
from tiny_models import tiny_model
from tiny_pairs import random_pairs
from tiny_tokenizers import CHATML, word_tokenizer


@pytest.fixture
def tok() -> Any:
    return word_tokenizer(chat_template=CHATML)


@pytest.mark.parametrize("method", ["cached", "naive"])
@pytest.mark.parametrize("kind", ["vector", "lora"])
@pytest.mark.parametrize("objective", ["sft", "reps", "split"])
def test_passes_give_the_loss_and_gradients_of_one_pass(
    method: str, kind: str, objective: str, tok: Any
) -> None:
    model = tiny_model("llama")
    delta = make_delta(model, kind, layer=1)
    batches, runner = prepare(
        model,
        tok,
        random_pairs(4, seed=2),
        delta,
        batch_size=4,
        seed=0,
        method=method,  # type: ignore[arg-type]
    )
    obj = make_objective(objective)
    draw = multiplier_drawer([0.5, 1.0, 2.0], torch.Generator().manual_seed(1))
    rows = obj.rows(batches[0].n_pairs, draw, delta.kind)
    params = list(delta.parameters())
    whole = obj.loss(rows, row_scores(model, batches[0], delta, rows, runner))
    g_whole = torch.autograd.grad(whole, params)
    calls = {"n": 0}
    import unisteer.training.batches as batches_module

    real = batches_module.row_scores

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        return real(*args, **kwargs)

    batches_module.row_scores = counted  # type: ignore[assignment]
    try:
        parted = obj.loss(rows, scores(model, batches[0], delta, rows, runner, per_pass=3))
        g_parted = torch.autograd.grad(parted, params)
    finally:
        batches_module.row_scores = real
    passes = -(-len(rows) // 3)
    assert calls["n"] == 2 * passes  # each pass once forward, once again in the backward
    assert torch.allclose(parted, whole, atol=1e-6, rtol=1e-6)
    for a, b in zip(g_parted, g_whole, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
        assert a.abs().sum() > 0


def test_training_runs_in_passes_that_fit_the_free_memory(
    tok: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = tiny_model("llama")
    pairs = random_pairs(8, seed=4)
    kw: dict[str, Any] = {"kind": "vector", "objective": "split", "layer": 1, "epochs": 1,
                          "batch_size": 4, "progress": False}  # fmt: skip
    whole = train(model, tok, pairs, **kw)
    batches, runner = prepare(
        model, tok, pairs, make_delta(model, "vector", layer=1), batch_size=4, seed=0
    )
    width = max(int(tb.batch.input_ids.shape[1]) for tb in batches)
    heads = max(int(tb.predicts.sum(1).max()) for tb in batches)
    # the devices say they have room for 3 such rows in the half the trainer may use
    free = 6 * row_bytes(model, width, heads, grad=True)
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": free)
    assert rows_per_pass(model, batches, runner) == 3
    with caplog.at_level(logging.INFO, logger="unisteer.training.trainer"):
        parted = train(model, tok, pairs, **kw)
    assert "a minibatch of 16 rows runs in passes of 3 rows" in caplog.text
    for a, b in zip(parted.parameters(), whole.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
    assert [h["loss"] for h in parted.meta["history"]] == pytest.approx(
        [h["loss"] for h in whole.meta["history"]], abs=1e-6
    )
