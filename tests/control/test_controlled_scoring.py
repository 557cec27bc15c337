"""Scoring with a controller: fixed(m) gives the sweep's numbers at m; kappa = 0 the
unsteered ones; a kappa sweep has the sweep's layout; static_kl finds the m whose rollouts'
95th KL percentile is kappa."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from unisteer.control.calibrate import static_kl
from unisteer.control.controllers import fixed, kl_budget
from unisteer.control.score import score_controlled, sweep_kappa
from unisteer.scoring.sweep import sweep

from conftest import make_delta
from tiny_models import tiny_model
from tiny_pairs import random_pairs
from tiny_tokenizers import CHATML, word_tokenizer

COLS = ["loss_pos", "loss_neg", "pref_odds", "util_odds"]


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    model = tiny_model("llama")
    return {
        "model": model,
        "tok": word_tokenizer(chat_template=CHATML),
        "delta": make_delta(model, "vector", layer=1),
        "pairs": random_pairs(6, seed=2),
    }


@pytest.mark.parametrize("positions", ["all", "completion", "prompt"])
def test_fixed_scores_like_the_sweep(setup: dict[str, Any], positions: str) -> None:
    model, tok, d, pairs = setup["model"], setup["tok"], setup["delta"], setup["pairs"]
    want = sweep(model, tok, pairs, d, [2.0], positions=positions, progress=False).table  # type: ignore[arg-type]
    got = score_controlled(model, tok, pairs, d, fixed(2.0), positions=positions)  # type: ignore[arg-type]
    assert np.abs(got[COLS].to_numpy() - want[COLS].to_numpy()).max() <= 1e-4
    assert (got["tokens_pos"].to_numpy() == want["tokens_pos"].to_numpy()).all()
    assert list(got["pair_id"]) == [p.id for p in pairs]


def test_kappa_zero_scores_the_unsteered_model(setup: dict[str, Any]) -> None:
    model, tok, d, pairs = setup["model"], setup["tok"], setup["delta"], setup["pairs"]
    base = sweep(model, tok, pairs, None, [0.0], progress=False).table
    got = score_controlled(model, tok, pairs, d, kl_budget(0.0, 4.0))
    assert np.abs(got[COLS].to_numpy() - base[COLS].to_numpy()).max() <= 1e-4
    assert (got["mean_m"] == 0.0).all()


def test_a_kappa_sweep_runs_from_unsteered_to_m_max(setup: dict[str, Any]) -> None:
    model, tok, d, pairs = setup["model"], setup["tok"], setup["delta"], setup["pairs"]
    table = sweep_kappa(model, tok, pairs, d, [0.0, 0.01, math.inf], 4.0, k=5, progress=False)
    assert list(table.columns[:2]) == ["pair_id", "kappa"] and len(table) == 3 * len(pairs)
    means = table.groupby("kappa")["mean_m"].mean()
    assert means[0.0] == 0.0 and means[math.inf] == 4.0 and 0.0 <= means[0.01] <= 4.0
    top = table[table["kappa"] == math.inf]
    want = sweep(model, tok, pairs, d, [4.0], progress=False).table
    assert np.abs(top[COLS].to_numpy() - want[COLS].to_numpy()).max() <= 1e-4


def test_static_kl_meets_its_percentile(setup: dict[str, Any]) -> None:
    model, tok, d, pairs = setup["model"], setup["tok"], setup["delta"], setup["pairs"]
    prompts = [p.query for p in pairs[:4]]
    cal = static_kl(model, tok, prompts, d, 0.005, 8.0, points=5, max_new_tokens=8)
    assert cal.grid[0] == 0.0 and cal.percentile[0] == 0.0
    assert all(a <= b + 1e-12 for a, b in zip(cal.percentile, cal.percentile[1:], strict=False))
    assert 0.0 <= cal.m <= 8.0 and cal.controller.candidates == (cal.m,)
    i = next((j for j, p in enumerate(cal.percentile) if p > 0.005), None)
    if i is not None:
        assert cal.grid[i - 1] <= cal.m <= cal.grid[i]
    again = static_kl(model, tok, prompts, d, 0.005, 8.0, points=5, max_new_tokens=8)
    assert again.m == cal.m  # seeded and greedy: the same calibration


def test_choose_static_interpolates_the_crossing() -> None:
    from unisteer.control.calibrate import choose_static

    grid, pct = (0.0, 1.0, 2.0, 3.0), (0.0, 0.1, 0.3, 0.9)
    assert choose_static(grid, pct, 0.2) == pytest.approx(1.5)
    assert choose_static(grid, pct, 0.0) == 0.0
    assert choose_static(grid, pct, 5.0) == 3.0
    assert choose_static(grid, (0.0, 0.5, 0.5, 0.5), 0.5) == 3.0  # never above: the end
    with pytest.raises(ValueError, match="kappa"):
        choose_static(grid, pct, -0.1)
