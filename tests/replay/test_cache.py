"""The replay cache: sweeps that share the self-check and the captures give the same numbers."""

from __future__ import annotations

import numpy as np
import pytest

from unisteer.replay import cache as cache_mod
from unisteer.replay.cache import ReplayCache
from unisteer.replay.prefix import PrefixRunner
from unisteer.scoring.sweep import sweep

from conftest import make_delta
from tiny_models import tiny_model
from tiny_pairs import random_pairs
from tiny_tokenizers import CHATML, word_tokenizer

COLS = ["loss_pos", "loss_neg", "pref_odds", "util_odds"]


@pytest.fixture
def tok():  # type: ignore[no-untyped-def]
    return word_tokenizer(chat_template=CHATML)


@pytest.mark.parametrize("kind", ["vector", "lora", "local_weight"])
def test_shared_sweeps_equal_fresh_ones_bit_for_bit(kind: str, tok, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    model = tiny_model("llama")
    pairs = random_pairs(7)
    first = make_delta(model, kind, layer=2, seed=1)
    second = make_delta(model, kind, layer=2, seed=2)
    cache = ReplayCache(model)
    kw = {"progress": False, "max_pairs_per_batch": 3}
    a = sweep(model, tok, pairs, first, [-1.0, 0.0, 2.0], cache=cache, **kw)
    assert cache.misses == 2 and cache.hits == 0  # 3 batches: the first one's is the check's
    captures = 0
    real = PrefixRunner.capture

    def counted(self, inputs):  # type: ignore[no-untyped-def]
        nonlocal captures
        captures += 1
        return real(self, inputs)

    monkeypatch.setattr(PrefixRunner, "capture", counted)
    # Another delta of the same kind at the same site, other multipliers: no capture, no check.
    b = sweep(model, tok, pairs, second, [-3.0, 0.5, 0.0], cache=cache, **kw)
    assert captures == 0 and cache.hits == 3
    monkeypatch.setattr(PrefixRunner, "capture", real)
    a_fresh = sweep(model, tok, pairs, first, [-1.0, 0.0, 2.0], **kw)
    b_fresh = sweep(model, tok, pairs, second, [-3.0, 0.5, 0.0], **kw)
    assert np.array_equal(a.table[COLS].to_numpy(), a_fresh.table[COLS].to_numpy())
    assert np.array_equal(b.table[COLS].to_numpy(), b_fresh.table[COLS].to_numpy())
    assert b.meta["method"] == b_fresh.meta["method"] == "prefix"
    assert cache.nbytes > 0


def test_other_pairs_and_other_layers_are_captured_anew(tok) -> None:  # type: ignore[no-untyped-def]
    model = tiny_model("llama")
    cache = ReplayCache(model)
    kw = {"progress": False, "cache": cache}
    sweep(model, tok, random_pairs(4), make_delta(model, "vector", layer=1), [1.0, 2.0], **kw)
    assert len(cache) == 1
    sweep(
        model, tok, random_pairs(4, seed=9), make_delta(model, "vector", layer=1), [1.0, 2.0], **kw
    )
    assert len(cache) == 2
    other = make_delta(model, "vector", layer=2)
    got = sweep(model, tok, random_pairs(4), other, [1.0, 2.0], **kw)
    assert len(cache) == 3  # the new site's self-check captured it
    fresh = sweep(model, tok, random_pairs(4), other, [1.0, 2.0], progress=False)
    assert np.array_equal(got.table[COLS].to_numpy(), fresh.table[COLS].to_numpy())


def test_a_failed_check_is_remembered_as_the_naive_path(tok, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from unisteer.scoring import sweep as sweep_mod

    model = tiny_model("llama")
    pairs = random_pairs(4)
    cache = ReplayCache(model)
    checks = 0

    def no_runner(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal checks
        checks += 1
        return None

    monkeypatch.setattr(sweep_mod, "_fast_runner", no_runner)
    delta = make_delta(model, "vector", layer=1)
    for _ in range(2):
        result = sweep(model, tok, pairs, delta, [-1.0, 1.0], progress=False, cache=cache)
        assert result.meta["method"] == "naive"
    assert checks == 1


def test_a_cache_belongs_to_one_model(tok) -> None:  # type: ignore[no-untyped-def]
    model, other = tiny_model("llama"), tiny_model("llama")
    cache = ReplayCache(model)
    with pytest.raises(ValueError, match="another model"):
        sweep(other, tok, random_pairs(2), make_delta(other, "vector"), [1.0, 2.0], cache=cache)


def test_batch_key_sees_every_token() -> None:
    from unisteer.data.tokens import Encoded

    a = (Encoded((1, 2, 3), 2, 3), Encoded((1, 2, 4), 2, 3))
    b = (Encoded((1, 2, 3), 2, 3), Encoded((1, 2, 5), 2, 3))
    assert cache_mod.batch_key([a], 0) != cache_mod.batch_key([b], 0)
    assert cache_mod.batch_key([a], 0) != cache_mod.batch_key([a], 1)
    assert cache_mod.batch_key([a], 0) == cache_mod.batch_key([a], 0)


def test_one_point_gives_the_same_numbers_with_a_warm_cache_as_with_none(tok) -> None:  # type: ignore[no-untyped-def]
    """A resumed experiment reads its sweeps from disk, so its cache is cold where an
    unbroken run's is warm: a one-point sweep (the evaluation at the chosen m) must not
    depend on that, to the last bit."""
    model = tiny_model("llama")
    pairs = random_pairs(5)
    delta = make_delta(model, "vector", layer=1)
    cache = ReplayCache(model)
    sweep(model, tok, pairs, delta, [-1.0, 1.0], progress=False, cache=cache)
    warm = sweep(model, tok, pairs, delta, [1.5], progress=False, cache=cache)
    cold = sweep(model, tok, pairs, delta, [1.5], progress=False, cache=ReplayCache(model))
    alone = sweep(model, tok, pairs, delta, [1.5], progress=False)
    assert warm.meta["method"] == cold.meta["method"] == alone.meta["method"] == "naive"
    assert np.array_equal(warm.table[COLS].to_numpy(), cold.table[COLS].to_numpy())
    assert np.array_equal(warm.table[COLS].to_numpy(), alone.table[COLS].to_numpy())
