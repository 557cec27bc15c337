"""Log-odds math and the multiplier sweep: reference checks and fast-vs-naive agreement."""

from __future__ import annotations

import logging
from pathlib import Path

import mpmath
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unisteer.data import PolarityPair, collate, encode_pair
from unisteer.replay.recorder import Recorder
from unisteer.scoring.odds import log1mexp, pref_odds, util_odds
from unisteer.scoring.sweep import score_pairs, sweep

from conftest import make_delta
from tiny_models import ARCHS, tiny_model
from tiny_pairs import random_pairs
from tiny_tokenizers import CHATML, word_tokenizer

mpmath.mp.dps = 60


def reference_util(lp: float, ln: float) -> float | None:
    """In 60-digit arithmetic, with 1 - P_u written as -expm1(-min L) - e^{-max L} so that tiny
    losses are not rounded away."""
    a, b = mpmath.mpf(min(lp, ln)), mpmath.mpf(max(lp, ln))
    one_minus = -mpmath.expm1(-a) - mpmath.exp(-b)
    if one_minus <= 0:
        return None
    return float(mpmath.log(mpmath.exp(-a) + mpmath.exp(-b)) - mpmath.log(one_minus))


losses = st.one_of(
    st.floats(0, 1e4, allow_subnormal=False),
    st.floats(0, 1e-6, allow_subnormal=False),  # both losses near 0
    st.floats(0.5, 2.0),
    st.just(0.0),
    st.just(1e4),
)


@settings(max_examples=300, deadline=None)
@given(lp=losses, ln=losses)
def test_odds_match_high_precision_reference(lp: float, ln: float) -> None:
    assert pref_odds(lp, ln) == ln - lp
    util, ok = util_odds(np.array([lp]), np.array([ln]))
    ref = reference_util(lp, ln)
    if ref is None:
        assert not ok[0] and np.isnan(util[0])
    else:
        assert ok[0], (lp, ln)
        assert util[0] == pytest.approx(ref, rel=1e-9, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(x=st.one_of(st.floats(-800, -1e-300), st.floats(-1e-10, -1e-300), st.floats(-50, -0.1)))
def test_log1mexp_matches_reference(x: float) -> None:
    v = mpmath.mpf(x)
    ref = float(mpmath.log(-mpmath.expm1(v)) if x > -1 else mpmath.log1p(-mpmath.exp(v)))
    assert log1mexp(x) == pytest.approx(ref, rel=1e-12, abs=1e-300)


def test_outside_domain_is_flagged_not_silent() -> None:
    util, ok = util_odds([0.1, 5.0, 0.0], [0.2, 6.0, 30.0])
    assert ok.tolist() == [False, True, False]
    assert np.isnan(util[0]) and np.isfinite(util[1]) and np.isnan(util[2])


@pytest.fixture
def tok():  # type: ignore[no-untyped-def]
    return word_tokenizer(chat_template=CHATML)


def test_unsteered_sweep_matches_hand_computed_likelihood(tok) -> None:  # type: ignore[no-untyped-def]
    model = tiny_model("llama")
    pairs = random_pairs(5)
    table = score_pairs(model, tok, pairs)
    for pair, row in zip(pairs, table.itertuples(), strict=True):
        for text, loss in ((pair.positive, row.loss_pos), (pair.negative, row.loss_neg)):
            prompt = tok.apply_chat_template(
                [{"role": "user", "content": pair.query}],
                add_generation_prompt=True,
                tokenize=False,
            )
            p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
            c_ids = tok(text, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([p_ids + c_ids])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0].double(), -1)
            by_hand = -sum(float(logp[len(p_ids) + k - 1, t]) for k, t in enumerate(c_ids))
            assert loss == pytest.approx(by_hand, abs=1e-4)
    mean = score_pairs(model, tok, pairs, reduction="mean")
    assert np.allclose(mean.loss_pos * mean.tokens_pos, table.loss_pos, atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", ["vector", "lora", "local_weight"])
def test_fast_sweep_equals_naive(arch: str, kind: str, tok) -> None:  # type: ignore[no-untyped-def]
    model = tiny_model(arch)
    delta = make_delta(model, kind, layer=1)
    pairs = random_pairs(9)
    ms = [-2.0, -0.5, 0.0, 1.0, 3.0]
    fast = sweep(model, tok, pairs, delta, ms, progress=False, max_pairs_per_batch=4)
    naive = sweep(model, tok, pairs, delta, ms, progress=False, method="naive")
    assert fast.meta["method"] == "prefix" and naive.meta["method"] == "naive"
    cols = ["loss_pos", "loss_neg", "pref_odds", "util_odds"]
    assert np.abs(fast.table[cols].to_numpy() - naive.table[cols].to_numpy()).max() <= 1e-4
    assert (fast.table[["pair_id", "m"]] == naive.table[["pair_id", "m"]]).all().all()
    # m = 0 is the unsteered model (computed through the same cached path as the other points).
    base = score_pairs(model, tok, pairs, max_pairs_per_batch=4)
    zero = fast.table[fast.table.m == 0.0].reset_index(drop=True)
    assert np.abs(zero.loss_pos.to_numpy() - base.loss_pos.to_numpy()).max() <= 1e-4


def pairs_with_shared_starts() -> list[PolarityPair]:
    """Completions that begin alike (as contrastive data often does), including one that is a
    prefix of the other and two that differ only in their last token."""
    return [
        PolarityPair("hello you", "the sea is blue .", "the sea is not blue .", id="a"),
        PolarityPair("good day", "i like it", "i like it .", id="b"),
        PolarityPair("is it blue ?", "yes , it is", "yes , it is not", id="c"),
        PolarityPair("hello", "no", "yes", id="d"),
        PolarityPair("you are helpful", "a good day , a good day", "a good world", id="e"),
    ]


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2", "opt"])
@pytest.mark.parametrize("positions", ["all", "prompt", "completion"])
@pytest.mark.parametrize("kind", ["vector", "local_weight"])
def test_shared_completion_starts_are_scored_exactly(
    arch: str, positions: str, kind: str, tok
) -> None:  # type: ignore[no-untyped-def]
    from unisteer.replay.prefix import common_start, shared_start

    model = tiny_model(arch)
    delta = make_delta(model, kind, layer=2)
    pairs = pairs_with_shared_starts()
    starts = [
        shared_start(encode_pair(tok, p)) - encode_pair(tok, p)[0].prompt_length for p in pairs
    ]
    assert starts == [3, 2, 3, 0, 2]  # each completion keeps at least one token of its own
    assert common_start([encode_pair(tok, p) for p in pairs]) == 2  # "<|im_start|> user"
    ms = [-1.5, 0.0, 2.0]
    fast = sweep(model, tok, pairs, delta, ms, progress=False, positions=positions)  # type: ignore[arg-type]
    naive = sweep(model, tok, pairs, delta, ms, progress=False, positions=positions, method="naive")  # type: ignore[arg-type]
    assert fast.meta["method"] == "prefix"
    cols = ["loss_pos", "loss_neg"]
    assert np.abs(fast.table[cols].to_numpy() - naive.table[cols].to_numpy()).max() <= 1e-4


def test_rows_of_multipliers_equal_separate_sweeps(tok) -> None:  # type: ignore[no-untyped-def]
    model = tiny_model("qwen2")
    delta = make_delta(model, "lora", layer=2)
    pairs = random_pairs(6)
    together = sweep(model, tok, pairs, delta, [-1.0, 2.0, 4.0], progress=False)
    for m in (-1.0, 2.0, 4.0):
        alone = score_pairs(model, tok, pairs, delta, m)
        got = together.table[together.table.m == m].reset_index(drop=True)
        assert np.abs(got.pref_odds - alone.pref_odds).max() <= 1e-5


@pytest.mark.parametrize("positions", ["prompt", "completion"])
def test_sweep_positions_fast_equals_naive(positions: str, tok) -> None:  # type: ignore[no-untyped-def]
    model = tiny_model("gemma3")
    delta = make_delta(model, "vector", layer=1)
    pairs = random_pairs(5)
    kw = {"progress": False, "positions": positions}
    fast = sweep(model, tok, pairs, delta, [-2.0, 2.0], **kw)  # type: ignore[arg-type]
    naive = sweep(model, tok, pairs, delta, [-2.0, 2.0], method="naive", **kw)  # type: ignore[arg-type]
    assert np.abs(fast.table.pref_odds - naive.table.pref_odds).max() <= 1e-4
    everywhere = sweep(model, tok, pairs, delta, [2.0], progress=False)
    assert not np.allclose(everywhere.table.pref_odds, fast.table[fast.table.m == 2.0].pref_odds)


def test_unreproducible_head_falls_back_to_naive(tok, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    model = tiny_model("llama")
    delta = make_delta(model, "vector")
    pairs = random_pairs(4)
    real = Recorder.__post_init__

    def broken(self: Recorder) -> None:
        real(self)
        self.softcap = 0.5  # a head that does not match the model's

    monkeypatch.setattr(Recorder, "__post_init__", broken)
    with caplog.at_level(logging.WARNING):
        result = sweep(model, tok, pairs, delta, [-1.0, 1.0], progress=False)
    assert "using the naive path" in caplog.text and result.meta["method"] == "naive"
    naive = sweep(model, tok, pairs, delta, [-1.0, 1.0], progress=False, method="naive")
    assert np.array_equal(result.table.pref_odds, naive.table.pref_odds)


def test_results_table_means_and_files(tmp_path: Path, tok) -> None:  # type: ignore[no-untyped-def]
    model = tiny_model("llama")
    delta = make_delta(model, "vector")
    pairs = random_pairs(7)
    result = sweep(model, tok, pairs, delta, [-1.0, 0.0, 1.0], progress=False)
    t = result.table
    assert list(t.columns) == [
        "pair_id",
        "m",
        "loss_pos",
        "loss_neg",
        "pref_odds",
        "util_odds",
        "util_in_domain",
        "tokens_pos",
        "tokens_neg",
    ]
    assert t.pair_id.tolist()[:3] == ["p0", "p0", "p0"] and len(t) == 21
    means = result.means()
    g = t[t.m == 1.0]
    row = means[means.m == 1.0].iloc[0]
    assert row.pref_odds == pytest.approx(g.pref_odds.mean())
    assert row.pref_odds_sem == pytest.approx(g.pref_odds.std(ddof=1) / np.sqrt(7))
    assert row.n == 7 and row.n_out_of_domain == 0
    result.save(tmp_path / "s")
    back = pd.read_parquet(tmp_path / "s" / "sweep.parquet")
    pd.testing.assert_frame_equal(back, t)
    assert (tmp_path / "s" / "means.parquet").is_file() and (
        tmp_path / "s" / "sweep.json"
    ).is_file()


def test_bad_arguments(tok) -> None:  # type: ignore[no-untyped-def]
    model = tiny_model("llama")
    pairs = random_pairs(2)
    with pytest.raises(ValueError, match="every m must be 0"):
        sweep(model, tok, pairs, None, [1.0])
    with pytest.raises(ValueError, match="ms is empty"):
        sweep(model, tok, pairs, make_delta(model, "vector"), [])
    with pytest.raises(ValueError, match="finite"):
        sweep(model, tok, pairs, make_delta(model, "vector"), [float("nan")])


def test_memory_budget_sets_batch_shapes(tok) -> None:  # type: ignore[no-untyped-def]
    model = tiny_model("llama")
    delta = make_delta(model, "vector")
    pairs = random_pairs(12)
    small = sweep(model, tok, pairs, delta, [-1.0, 1.0, 2.0], progress=False, memory_budget=200_000)
    large = sweep(model, tok, pairs, delta, [-1.0, 1.0, 2.0], progress=False)
    assert np.abs(small.table.pref_odds - large.table.pref_odds).max() <= 1e-5


def test_collate_rows_order_for_pairs(tok) -> None:  # type: ignore[no-untyped-def]
    pairs = random_pairs(2)
    enc = [e for p in pairs for e in encode_pair(tok, p)]
    batch = collate(enc, 0)
    assert batch.input_ids.shape[0] == 4
