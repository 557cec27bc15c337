"""The two runners on their own: each reproduces the naive path (one hooked full forward pass
per multiplier) for every kind, on every tiny architecture, through the Runner protocol."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from unisteer.core.sites import replay_start
from unisteer.data import PolarityPair
from unisteer.data.tokens import encode_pairs, pair_batch
from unisteer.replay.base import ReplayInput, Runner
from unisteer.replay.prefix import PrefixRunner, common_start, shared_start
from unisteer.replay.stacked import StackedRunner
from unisteer.scoring.sweep import naive_losses

from conftest import make_delta
from tiny_models import ARCHS, tiny_model
from tiny_pairs import random_pairs
from tiny_tokenizers import CHATML, word_tokenizer

MS = [-2.0, 0.0, 0.5, 3.0]


@pytest.fixture
def tok() -> Any:
    return word_tokenizer(chat_template=CHATML)


def inputs_for(tok: Any, pairs: list[PolarityPair]) -> ReplayInput:
    encoded = encode_pairs(tok, pairs)
    return ReplayInput(encoded, pair_batch(encoded, range(len(pairs)), 0), 0)


def runners(model: Any, delta: Any) -> list[Runner[Any]]:
    layer, after = replay_start(model, [delta])
    return [PrefixRunner(model, layer, after), StackedRunner(model, layer, after)]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", ["vector", "lora", "local_weight"])
def test_each_runner_equals_the_naive_path(arch: str, kind: str, tok: Any) -> None:
    model = tiny_model(arch)
    delta = make_delta(model, kind)
    inputs = inputs_for(tok, random_pairs(4, seed=3))
    naive = torch.stack([naive_losses(model, inputs.batch, delta, m) for m in MS])
    for runner in runners(model, delta):
        cap = runner.capture(inputs)
        assert cap is not None
        got = runner.run(cap, delta, MS, "all")
        assert got.shape == (len(MS), 8) and got.dtype == torch.float64
        assert torch.allclose(got, naive, atol=2e-4, rtol=1e-6), runner.name
        assert torch.allclose(cap.base, naive[1], atol=2e-4, rtol=1e-6), runner.name


def test_prefix_runner_declines_pairs_whose_prompts_differ(tok: Any) -> None:
    model = tiny_model("llama")
    pairs = [
        PolarityPair("tell me the sea", "blue", "grey", id="a"),
        PolarityPair("a cat", "cat", "dog", id="b"),
    ]
    inputs = inputs_for(tok, pairs)
    first, second = inputs.encoded
    inputs.encoded = [(first[0], second[1]), second]  # pair a's A_n carries pair b's prompt
    assert PrefixRunner(model, 1).capture(inputs) is None
    assert StackedRunner(model, 1).capture(inputs) is not None  # the fallback takes any rows


def test_shared_and_common_starts(tok: Any) -> None:
    pairs = [
        PolarityPair("tell me the sea", "the sea is blue", "the sea is grey", id="a"),
        PolarityPair("tell me a cat", "cat", "dog", id="b"),
    ]
    encoded = encode_pairs(tok, pairs)
    pos, neg = encoded[0]
    k = shared_start(encoded[0])
    # the prompt plus "the sea is", and each completion keeps a token of its own
    assert pos.input_ids[:k] == neg.input_ids[:k] and k < min(
        len(pos.input_ids), len(neg.input_ids)
    )
    assert pos.input_ids[k] != neg.input_ids[k] and k > pos.prompt_length
    assert shared_start(encoded[1]) == encoded[1][0].prompt_length  # completions differ at once
    c = common_start(encoded)
    assert c < min(e[0].prompt_length for e in encoded)
    assert all(e[0].input_ids[:c] == pos.input_ids[:c] for e in encoded)
