"""The trainer: cached path = naive path, determinism, resume, divergence, DiffMean by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import unisteer.training.trainer as train_module
from unisteer.data import collate, encode_pair
from unisteer.training.batches import prepare, row_scores
from unisteer.training.checkpoint import CheckpointError
from unisteer.training.config import PRESETS, make_config, preset_kind_objective
from unisteer.training.objectives import diffmean, make_objective
from unisteer.training.trainer import TrainingDiverged, multiplier_drawer, train

from conftest import make_delta
from tiny_models import ARCHS, tiny_model
from tiny_pairs import random_pairs
from tiny_tokenizers import CHATML, word_tokenizer

KINDS = ["vector", "lora", "local_weight"]
OBJECTIVES = ["sft", "reps", "split"]


@pytest.fixture
def tok() -> Any:
    return word_tokenizer(chat_template=CHATML)


def params(delta: Any) -> list[torch.Tensor]:
    return [p.detach().clone() for p in delta.parameters()]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_cached_loss_and_gradient_equal_naive(
    arch: str, kind: str, objective: str, tok: Any
) -> None:
    model = tiny_model(arch)
    delta = make_delta(model, kind, layer=1)
    pairs = random_pairs(6, seed=3)
    obj = make_objective(objective)
    results = []
    for method in ("cached", "naive"):
        batches, runner = prepare(model, tok, pairs, delta, batch_size=3, seed=0, method=method)  # type: ignore[arg-type]
        assert (runner is not None) == (method == "cached")
        draw = multiplier_drawer([0.5, 1.0, 2.0], torch.Generator().manual_seed(5))
        rows = obj.rows(batches[0].n_pairs, draw, delta.kind)
        loss = obj.loss(rows, row_scores(model, batches[0], delta, rows, runner))
        grads = torch.autograd.grad(loss, list(delta.parameters()))
        results.append((loss.detach(), grads))
    (loss_c, grad_c), (loss_n, grad_n) = results
    assert torch.allclose(loss_c, loss_n, atol=1e-5, rtol=1e-5)
    for gc, gn in zip(grad_c, grad_n, strict=True):
        assert torch.allclose(gc, gn, atol=1e-5, rtol=1e-4)
        assert gc.abs().sum() > 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_training_lowers_the_loss_and_leaves_the_model_alone(
    kind: str, objective: str, tok: Any
) -> None:
    model = tiny_model("llama")
    model.train()  # the trainer uses eval mode and restores this flag afterwards
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pairs = random_pairs(8)
    delta = train(
        model, tok, pairs, kind=kind, objective=objective, layer=1, epochs=4, lr=0.05,  # type: ignore[arg-type]
        multipliers=[0.5, 1.0], progress=False,
    )  # fmt: skip
    history = delta.meta["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    assert delta.meta["objective"] == objective and delta.meta["method"] == "cached"
    assert delta.meta["grid"][0] == pytest.approx(-1.5) and len(delta.meta["grid"]) == 21
    assert all(p.dtype == torch.float32 for p in delta.parameters())


def test_initialisation_follows_the_kind(tok: Any) -> None:
    model = tiny_model("llama")
    pairs = random_pairs(4)
    lora = train(
        model, tok, pairs, kind="lora", objective="sft", layer=1, max_steps=0, progress=False
    )
    assert torch.count_nonzero(lora.lora_B) == 0 and torch.count_nonzero(lora.lora_A) > 0
    lw = train(
        model,
        tok,
        pairs,
        kind="local_weight",
        objective="sft",
        layer=1,
        max_steps=0,
        progress=False,
    )
    assert torch.count_nonzero(lw.weight_) == 0 and torch.count_nonzero(lw.bias_) == 0
    vec = train(
        model, tok, pairs, kind="vector", objective="sft", layer=1, max_steps=0, progress=False
    )
    assert 0.5 < float(vec.bias_.detach().norm()) < 2.0  # N(0, 1/d): a norm of about 1


def test_same_seed_same_delta_and_seed_matters(tok: Any) -> None:
    model = tiny_model("llama")
    pairs = random_pairs(8)
    kw: dict[str, Any] = {"kind": "vector", "objective": "split", "layer": 1, "epochs": 2}
    a = train(model, tok, pairs, progress=False, **kw)
    b = train(model, tok, pairs, progress=False, **kw)
    c = train(model, tok, pairs, progress=False, seed=1, **kw)
    assert torch.equal(a.bias_, b.bias_)
    assert not torch.equal(a.bias_, c.bias_)


@pytest.mark.parametrize("kind", ["vector", "lora"])
def test_resume_reaches_the_same_parameters(kind: str, tok: Any, tmp_path: Path) -> None:
    model = tiny_model("qwen2")
    pairs = random_pairs(10)
    val = random_pairs(3, seed=9)
    kw: dict[str, Any] = {
        "kind": kind, "objective": "reps", "layer": 2, "epochs": 3, "batch_size": 3,
        "grad_accum": 2, "val_pairs": val, "progress": False,
    }  # fmt: skip
    whole = train(model, tok, pairs, **kw)
    ckpt = tmp_path / "ckpt"
    part = train(model, tok, pairs, checkpoint_dir=ckpt, max_steps=3, **kw)
    assert part.meta["steps"] == 3 and (ckpt / "checkpoint.json").is_file()
    resumed = train(model, tok, pairs, checkpoint_dir=ckpt, resume=True, **kw)
    for p, q in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    assert resumed.meta["history"] == whole.meta["history"]
    assert resumed.meta["validation"] == whole.meta["validation"]
    assert len(whole.meta["validation"]) == 3


def test_ctrl_c_checkpoints_and_resume_matches(
    tok: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny_model("llama")
    pairs = random_pairs(8)
    kw: dict[str, Any] = {
        "kind": "local_weight", "objective": "split", "layer": 1, "epochs": 2, "batch_size": 2,
        "grad_accum": 3, "progress": False,
    }  # fmt: skip
    whole = train(model, tok, pairs, **kw)
    real = train_module.objective_loss
    calls = {"n": 0}

    def interrupted(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 5:  # in the middle of the second accumulation group
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "objective_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(model, tok, pairs, checkpoint_dir=tmp_path, **kw)
    monkeypatch.setattr(train_module, "objective_loss", real)
    resumed = train(model, tok, pairs, checkpoint_dir=tmp_path, resume=True, **kw)
    for p, q in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)


def test_resume_refuses_other_settings(tok: Any, tmp_path: Path) -> None:
    model = tiny_model("llama")
    pairs = random_pairs(6)
    kw: dict[str, Any] = {"kind": "vector", "objective": "sft", "layer": 1, "progress": False}
    train(model, tok, pairs, checkpoint_dir=tmp_path, max_steps=1, **kw)
    with pytest.raises(CheckpointError, match=r"lr: None -> 0\.5"):
        train(model, tok, pairs, checkpoint_dir=tmp_path, resume=True, lr=0.5, **kw)
    (tmp_path / "checkpoint.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="does not match"):
        train(model, tok, pairs, checkpoint_dir=tmp_path, resume=True, **kw)


def test_nan_stops_with_last_good_state(tok: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model("llama")
    pairs = random_pairs(8)
    kw: dict[str, Any] = {
        "kind": "vector",
        "objective": "sft",
        "layer": 1,
        "batch_size": 2,
        "progress": False,
    }
    after_one = train(model, tok, pairs, max_steps=1, **kw)
    real = train_module.objective_loss
    calls = {"n": 0}

    def poisoned(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(train_module, "objective_loss", poisoned)
    with pytest.raises(TrainingDiverged, match="optimiser step 3: the loss is nan") as info:
        train(model, tok, pairs, **kw)
    assert torch.equal(info.value.delta.bias_, after_one.bias_)
    assert "after step 1" in str(info.value)


class NanGradient(torch.autograd.Function):
    """Identity forward, NaN backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("nan")


def test_nan_gradient_is_caught(tok: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model("llama")
    kw: dict[str, Any] = {
        "kind": "lora",
        "objective": "split",
        "layer": 1,
        "batch_size": 4,
        "progress": False,
    }
    after_one = train(model, tok, random_pairs(8), max_steps=1, **kw)
    real = train_module.objective_loss
    calls = {"n": 0}

    def poisoned(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return NanGradient.apply(loss) if calls["n"] == 2 else loss  # type: ignore[no-any-return]

    monkeypatch.setattr(train_module, "objective_loss", poisoned)
    with pytest.raises(TrainingDiverged, match="step 2: the gradient norm is nan") as info:
        train(model, tok, random_pairs(8), **kw)
    # The parameters that gave the NaN gradient are suspect: back to those before step 1.
    start = train(model, tok, random_pairs(8), max_steps=0, **kw)
    assert torch.equal(info.value.delta.lora_A, start.lora_A)
    assert not torch.equal(after_one.lora_B, start.lora_B)


def test_sampled_multipliers_come_from_the_grid(tok: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[torch.Tensor] = []
    real = train_module.scores

    def spy(model: Any, tb: Any, delta: Any, rows: Any, *a: Any) -> Any:
        seen.append(rows.m.clone())
        return real(model, tb, delta, rows, *a)

    monkeypatch.setattr(train_module, "scores", spy)
    train(
        tiny_model("llama"), tok, random_pairs(6), kind="vector", objective="sft", layer=1,
        multipliers=[3.0, 7.0], epochs=2, progress=False,
    )  # fmt: skip
    values = set(torch.cat(seen).abs().tolist())
    assert values == {3.0, 7.0}


def test_diffmean_matches_hand_computation(tok: Any) -> None:
    model = tiny_model("llama")
    pairs = random_pairs(5)
    delta = diffmean(model, tok, pairs, layer=2, batch_size=2)
    total = torch.zeros(32, dtype=torch.float64)
    norms = []
    for pair in pairs:
        means = []
        for enc in encode_pair(tok, pair):
            ids = torch.tensor([enc.input_ids])
            with torch.no_grad():
                hidden = model(ids, output_hidden_states=True).hidden_states[3][0].double()
            norms.append(hidden.norm(dim=-1))
            means.append(hidden[enc.prompt_length : enc.completion_end].mean(0))
        total += means[0] - means[1]
    want = total / len(pairs)
    assert torch.allclose(delta.bias_.double(), want, atol=1e-5)
    unit = float(torch.cat(norms).median()) / float(want.norm())
    assert delta.meta["unit"] == pytest.approx(unit, rel=1e-4)
    assert delta.meta["grid"][-1] == pytest.approx(3 * unit, rel=1e-4)
    assert len(delta.meta["grid"]) == 21 and 0.0 in delta.meta["grid"]


def test_diffmean_through_train_and_bad_kind(tok: Any) -> None:
    model = tiny_model("gpt2")
    delta = train(model, tok, random_pairs(4), kind="vector", objective="diffmean", progress=False)
    assert delta.layer == 2 and delta.meta["objective"] == "diffmean"
    with pytest.raises(ValueError, match="vectors only"):
        train(model, tok, random_pairs(4), kind="lora", objective="diffmean")


def test_presets_follow_the_paper_table() -> None:
    p = PRESETS["psychopathy-gemma-vector-split"]
    assert (p["gamma"], p["theta"], p["bidirectional"], p["lr"]) == (8.0, 0.3, True, 0.08)
    p = PRESETS["axbench-gemma-local_weight-split"]
    assert (p["batch_size"], p["grad_accum"], p["epochs"], p["lambda_n"]) == (2, 2, 12, 0.3)
    assert PRESETS["axbench-qwen-vector-sft"]["epochs"] == 18
    assert preset_kind_objective("powerseeking-qwen-lora-reps") == ("lora", "reps")
    assert len(PRESETS) == 2 * 3 * 3 * 3
    config = make_config("psychopathy-qwen-lora-split", epochs=5)
    assert config.epochs == 5 and config.gamma == 6.0
    with pytest.raises(ValueError, match="unknown preset 'psychopathy-llama-lora-split'"):
        make_config("psychopathy-llama-lora-split")
    with pytest.raises(ValueError, match="unknown training option"):
        make_config(learning_rate=0.1)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        make_config(batch_size=0)


def test_collate_rows_match_encoding(tok: Any) -> None:
    """The minibatch rows are [p0+, p0-, ...] with right padding (what row_scores assumes)."""
    model = tiny_model("llama")
    pairs = random_pairs(4)
    delta = make_delta(model, "vector")
    batches, _ = prepare(model, tok, pairs, delta, batch_size=4, seed=0)
    tb = batches[0]
    by_id = {p.id: p for p in pairs}
    expected = collate(
        [e for i in tb.ids for e in encode_pair(tok, by_id[i])], 0, padding_side="right"
    )
    assert torch.equal(tb.batch.input_ids, expected.input_ids)


def test_cache_shares_the_capture_across_objectives_and_kinds(
    tok: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import unisteer.training.batches as tf

    model = tiny_model("llama")
    pairs = random_pairs(6)
    captures = {"n": 0}
    real = tf.StackedRunner.capture

    def counting(self: Any, batch: Any) -> Any:
        captures["n"] += 1
        return real(self, batch)

    monkeypatch.setattr(tf.StackedRunner, "capture", counting)
    cache = tf.PrepareCache()
    shared = []
    for kind, objective in [("vector", "split"), ("lora", "sft"), ("local_weight", "reps")]:
        shared.append(
            train(
                model,
                tok,
                pairs,
                kind=kind,
                objective=objective,
                layer=1,
                epochs=1,  # type: ignore[arg-type]
                progress=False,
                cache=cache,
            )
        )
    assert captures["n"] == 2  # 6 pairs in batches of 4: two captures, once
    alone = train(
        model, tok, pairs, kind="lora", objective="sft", layer=1, epochs=1, progress=False
    )
    assert torch.equal(alone.lora_B, shared[1].lora_B)
    # Entries belong to the model object, not to its config or id: another model with the same
    # config gets captures of its own.
    other = tiny_model("llama")
    train(
        other,
        tok,
        pairs,
        kind="vector",
        objective="sft",
        layer=1,
        epochs=1,
        progress=False,
        cache=cache,
    )
    assert captures["n"] == 2 + 2 + 2  # `alone` (no cache) and `other` captured for themselves


def test_a_capture_that_fails_falls_back_to_naive_training(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tok: Any
) -> None:
    """An architecture the recorder does not understand trains on the naive path, with a
    warning, instead of crashing."""
    import logging

    from unisteer.replay.stacked import StackedRunner

    def broken(self: Any, inputs: Any) -> Any:
        raise RuntimeError("cannot record this")

    monkeypatch.setattr(StackedRunner, "capture", broken)
    model = tiny_model("llama")
    delta = make_delta(model, "vector", layer=1)
    with caplog.at_level(logging.WARNING):
        batches, runner = prepare(model, tok, random_pairs(4), delta, batch_size=2, seed=0)
    assert runner is None and all(b.capture is None for b in batches)
    assert "using the naive path" in caplog.text
    assert torch.isfinite(batches[0].ref_logp).all()


def test_interrupt_during_validation_resumes_with_that_validation(
    tok: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny_model("llama")
    pairs, val = random_pairs(8), random_pairs(3, seed=9)
    kw: dict[str, Any] = {
        "kind": "vector", "objective": "sft", "layer": 1, "epochs": 2, "batch_size": 2,
        "val_pairs": val, "progress": False,
    }  # fmt: skip
    whole = train(model, tok, pairs, **kw)
    real = train_module._validate
    calls = {"n": 0}

    def interrupted(*args: Any, **kwargs: Any) -> float:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "_validate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(model, tok, pairs, checkpoint_dir=tmp_path, **kw)
    resumed = train(model, tok, pairs, checkpoint_dir=tmp_path, resume=True, **kw)
    assert resumed.meta["validation"] == whole.meta["validation"]
    assert len(resumed.meta["validation"]) == 2
    for p, q in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)


def test_ctrl_c_just_after_an_optimiser_step_is_held_until_the_step_is_recorded(
    tok: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real SIGINT right after ``optimizer.step()`` is delivered only once the step counter
    and history record it: the checkpoint then holds step k with step k's parameters, and the
    resumed run equals an uninterrupted one."""
    import os
    import signal

    model = tiny_model("llama")
    pairs = random_pairs(8)
    kw: dict[str, Any] = {
        "kind": "lora", "objective": "sft", "layer": 1, "epochs": 2, "batch_size": 2,
        "progress": False,
    }  # fmt: skip
    whole = train(model, tok, pairs, **kw)
    real = torch.optim.AdamW.step
    calls = {"n": 0}

    def step_then_sigint(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_sigint)
    with pytest.raises(KeyboardInterrupt):
        train(model, tok, pairs, checkpoint_dir=tmp_path, **kw)
    state = __import__("json").loads((tmp_path / "checkpoint.json").read_text())
    assert state["step"] == 3 and len(state["history"]) == 3
    monkeypatch.setattr(torch.optim.AdamW, "step", real)
    resumed = train(model, tok, pairs, checkpoint_dir=tmp_path, resume=True, **kw)
    for p, q in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
