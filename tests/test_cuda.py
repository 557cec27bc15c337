"""The library on a CUDA device: a model held on the GPU gives the CPU's numbers (sweep on both
paths, training on both paths, DiffMean, generation). Skipped without CUDA; run on a GPU
machine with ``python -m pytest tests/test_cuda.py``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from unisteer.generation import generate
from unisteer.scoring.sweep import sweep
from unisteer.training.objectives import diffmean
from unisteer.training.trainer import train

from conftest import make_delta
from tiny_models import tiny_model
from tiny_pairs import random_pairs
from tiny_tokenizers import CHATML, word_tokenizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

COLS = ["loss_pos", "loss_neg", "pref_odds", "util_odds"]
MS = [-2.0, -1.0, 0.0, 1.0, 2.0]


@pytest.fixture(scope="module")
def models() -> tuple[Any, Any, Any]:
    """(the tiny llama on the CPU, the same weights on cuda:0, the tokenizer)."""
    cpu = tiny_model("llama")
    gpu = tiny_model("llama").to("cuda")
    gpu.load_state_dict(cpu.state_dict())
    return cpu, gpu, word_tokenizer(chat_template=CHATML)


@pytest.mark.parametrize("method", ["fast", "naive"])
@pytest.mark.parametrize(("kind", "layer"), [("vector", 1), ("lora", 1), ("local_weight", 2)])
def test_sweep_on_the_gpu_gives_the_cpus_numbers(
    models: tuple[Any, Any, Any], kind: str, layer: int, method: str
) -> None:
    cpu, gpu, tok = models
    pairs = random_pairs(6, seed=3)
    delta = make_delta(cpu, kind, layer=layer)
    want = sweep(cpu, tok, pairs, delta, MS, progress=False, method=method)  # type: ignore[arg-type]
    got = sweep(gpu, tok, pairs, delta.to("cuda"), MS, progress=False, method=method)  # type: ignore[arg-type]
    assert got.meta["method"] == want.meta["method"]
    assert np.abs(got.table[COLS].to_numpy() - want.table[COLS].to_numpy()).max() <= 1e-3


@pytest.mark.parametrize("method", ["cached", "naive"])
@pytest.mark.parametrize(("kind", "objective"), [("vector", "split"), ("lora", "sft")])
def test_training_on_the_gpu_gives_the_cpus_delta(
    models: tuple[Any, Any, Any], kind: str, objective: str, method: str
) -> None:
    cpu, gpu, tok = models
    pairs = random_pairs(8, seed=4)
    kw: dict[str, Any] = {"kind": kind, "objective": objective, "layer": 1, "epochs": 1,
                          "batch_size": 4, "progress": False, "method": method}  # fmt: skip
    a = train(cpu, tok, pairs, **kw)
    b = train(gpu, tok, pairs, **kw)
    assert a.meta["method"] == b.meta["method"] == method
    for x, y in zip(a.parameters(), b.parameters(), strict=True):
        assert y.device.type == "cuda"
        assert torch.allclose(x.detach(), y.detach().cpu(), atol=1e-4, rtol=1e-3)


def test_diffmean_and_generation_on_the_gpu(models: tuple[Any, Any, Any]) -> None:
    cpu, gpu, tok = models
    pairs = random_pairs(6, seed=5)
    a = diffmean(cpu, tok, pairs, layer=1, progress=False)
    b = diffmean(gpu, tok, pairs, layer=1, progress=False)
    assert torch.allclose(a.bias_, b.bias_.detach().cpu(), atol=1e-4, rtol=1e-3)
    prompts = [p.query for p in pairs[:3]] * 2
    m = [0.0] * 3 + [4.0] * 3
    want = generate(cpu, tok, prompts, delta=a, m=m, max_new_tokens=6)
    got = generate(gpu, tok, prompts, delta=b, m=m, max_new_tokens=6)
    assert got == want
