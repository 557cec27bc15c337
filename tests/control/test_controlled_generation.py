"""Controllers on a tiny model: fixed(m) is generate()'s m; kl_budget with kappa = 0 is the
unsteered model bit for bit and with kappa = inf is fixed(m_max); in between every chosen
token's KL is within the budget; m_t comes back with every token."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unisteer.control.controllers import fixed, kl_budget, kl_divergence
from unisteer.control.generate import generate_controlled
from unisteer.generation import generate_detailed

from conftest import make_delta
from tiny_models import tiny_model
from tiny_pairs import random_pairs
from tiny_tokenizers import CHATML, word_tokenizer

POSITIONS = ["all", "completion", "prompt"]


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    model = tiny_model("llama")
    return {
        "model": model,
        "tok": word_tokenizer(chat_template=CHATML),
        "delta": make_delta(model, "vector", layer=1),
        "queries": [p.query for p in random_pairs(5, seed=3)],
    }


def tokens(gens: Any) -> list[tuple[int, ...]]:
    return [tuple(g.token_ids[: len(g.token_ids) - int(g.finished)]) for g in gens]


@pytest.mark.parametrize("positions", POSITIONS)
def test_fixed_is_generates_multiplier(setup: dict[str, Any], positions: str) -> None:
    model, tok, d, qs = setup["model"], setup["tok"], setup["delta"], setup["queries"]
    want = generate_detailed(model, tok, qs, delta=d, m=2.0, positions=positions,  # type: ignore[arg-type]
                             max_new_tokens=10)  # fmt: skip
    got = generate_controlled(model, tok, qs, d, fixed(2.0), positions=positions,  # type: ignore[arg-type]
                              max_new_tokens=10)  # fmt: skip
    assert [g.token_ids for g in got] == tokens(want)
    assert [g.text for g in got] == [g.text for g in want]
    steered_first = positions in ("all", "prompt")
    for g in got:
        assert len(g.m) == len(g.token_ids)
        assert all(math.isnan(x) for x in g.kl)  # fixed computes no reference
        if g.m:
            assert g.m[0] == (2.0 if steered_first else 0.0)
            assert set(g.m[1:]) <= ({0.0} if positions == "prompt" else {2.0})


@pytest.mark.parametrize("positions", POSITIONS)
def test_kappa_zero_is_the_unsteered_model_bit_for_bit(
    setup: dict[str, Any], positions: str
) -> None:
    model, tok, d, qs = setup["model"], setup["tok"], setup["delta"], setup["queries"]
    base = generate_detailed(model, tok, qs, max_new_tokens=12)
    got = generate_controlled(model, tok, qs, d, kl_budget(0.0, 4.0), positions=positions,  # type: ignore[arg-type]
                              max_new_tokens=12)  # fmt: skip
    assert [g.token_ids for g in got] == tokens(base)
    assert all(set(g.m) <= {0.0} and set(g.kl) <= {0.0} for g in got)


@pytest.mark.parametrize("positions", POSITIONS)
def test_kappa_infinity_is_fixed_m_max(setup: dict[str, Any], positions: str) -> None:
    model, tok, d, qs = setup["model"], setup["tok"], setup["delta"], setup["queries"]
    top = generate_controlled(model, tok, qs, d, kl_budget(math.inf, 4.0, k=4),
                              positions=positions, max_new_tokens=12)  # type: ignore[arg-type]  # fmt: skip
    want = generate_detailed(model, tok, qs, delta=d, m=4.0, positions=positions,  # type: ignore[arg-type]
                             max_new_tokens=12)  # fmt: skip
    assert [g.token_ids for g in top] == tokens(want)
    fixed_run = generate_controlled(model, tok, qs, d, fixed(4.0), positions=positions,  # type: ignore[arg-type]
                                    max_new_tokens=12)  # fmt: skip
    assert [g.m for g in top] == [g.m for g in fixed_run]


def test_every_token_keeps_its_budget(setup: dict[str, Any]) -> None:
    model, tok, qs = setup["model"], setup["tok"], setup["queries"]
    strong = make_delta(model, "vector", layer=1, seed=5)
    with torch.no_grad():
        strong.bias_.mul_(6.0)
    for kappa in (0.01, 0.1, 1.0):
        got = generate_controlled(model, tok, qs, strong, kl_budget(kappa, 8.0, k=5),
                                  max_new_tokens=10)  # fmt: skip
        for g in got:
            assert all(x == 0.0 or kl <= kappa for x, kl in zip(g.m, g.kl, strict=True))
            assert set(g.m) <= {0.0, 2.0, 4.0, 6.0, 8.0}
    small = generate_controlled(model, tok, qs, strong, kl_budget(0.01, 8.0, k=5),
                                max_new_tokens=10)  # fmt: skip
    large = generate_controlled(model, tok, qs, strong, kl_budget(1.0, 8.0, k=5),
                                max_new_tokens=10)  # fmt: skip
    mean = [sum(x for g in run for x in g.m) for run in (small, large)]
    assert mean[0] <= mean[1]  # a larger budget never steers less in total here


def test_sampling_is_seeded(setup: dict[str, Any]) -> None:
    model, tok, d, qs = setup["model"], setup["tok"], setup["delta"], setup["queries"]
    kw: dict[str, Any] = {"max_new_tokens": 8, "temperature": 1.0}
    a = generate_controlled(model, tok, qs, d, kl_budget(0.2, 4.0), seed=3, **kw)
    b = generate_controlled(model, tok, qs, d, kl_budget(0.2, 4.0), seed=3, batch_size=2, **kw)
    c = generate_controlled(model, tok, qs, d, kl_budget(0.2, 4.0), seed=4, **kw)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert [g.token_ids for g in a] != [g.token_ids for g in c]


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 6), st.floats(0.0, 3.0), st.integers(0, 10_000))
def test_kl_budget_chooses_the_largest_candidate_within_kappa(
    k: int, kappa: float, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    ref = torch.log_softmax(torch.randn(3, 7, generator=gen, dtype=torch.float64), -1)
    cand = torch.log_softmax(torch.randn(3, k, 7, generator=gen, dtype=torch.float64), -1)
    cand[:, 0] = ref  # the m = 0 candidate is the unsteered model on an unsteered path
    c = kl_budget(kappa, 5.0, k)
    index, kl = c.choose(cand, ref)
    full = kl_divergence(cand, ref[:, None])
    for b in range(3):
        ok = [j for j in range(k) if full[b, j] <= kappa]
        assert int(index[b]) == max(ok) and float(kl[b]) == float(full[b, int(index[b])])
    assert c.candidates[0] == 0.0 and c.candidates[-1] == 5.0 and len(c.candidates) == k


def test_bad_controllers_are_refused() -> None:
    with pytest.raises(ValueError, match="kappa"):
        kl_budget(-1.0, 4.0)
    with pytest.raises(ValueError, match="m_max"):
        kl_budget(0.5, 0.0)
    with pytest.raises(ValueError, match="k >= 2"):
        kl_budget(0.5, 4.0, k=1)
    with pytest.raises(ValueError, match="finite"):
        fixed(math.nan)
