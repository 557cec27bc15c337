"""The one exactness check: its tolerance, and how it picks or refuses a runner."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from unisteer.core.delta import Delta
from unisteer.data.tokens import encode_pairs, pair_batch
from unisteer.replay.base import ReplayInput
from unisteer.replay.check import (
    ABS_TOL,
    CHECK_MS,
    REL_TOL,
    SPREAD_FACTOR,
    batching_spread,
    exact_runner,
    excess,
    ordinary_nll,
    replay_excess,
)
from unisteer.replay.stacked import StackedRunner

from conftest import make_delta
from tiny_models import tiny_model
from tiny_pairs import random_pairs
from tiny_tokenizers import CHATML, word_tokenizer


@given(
    st.floats(0.0, 1e4),
    st.floats(-1.0, 1.0),
)
def test_excess_is_the_margin_beyond_abs_plus_rel_tolerance(ref: float, frac: float) -> None:
    limit = ABS_TOL + REL_TOL * ref
    off = frac * 2 * limit
    got = excess(
        torch.tensor([ref + off], dtype=torch.float64), torch.tensor([ref], dtype=torch.float64)
    )
    assert got == pytest.approx(abs(off) - limit, abs=1e-9)


class Broken:
    """A runner whose replay raises (an architecture it does not understand)."""

    name = "broken"

    def capture(self, inputs: ReplayInput) -> Any:
        return type(
            "Cap", (), {"base": torch.zeros(2 * len(inputs.encoded), dtype=torch.float64)}
        )()

    def run(self, cap: Any, delta: Delta, ms: Sequence[float], positions: str) -> torch.Tensor:
        raise RuntimeError("cannot replay this")


class Off(StackedRunner):
    """A runner that is off by 1e-3 nats at m = 0: beyond the tolerance."""

    name = "off"

    def run(self, cap: Any, delta: Delta, ms: Sequence[float], positions: Any) -> torch.Tensor:
        return super().run(cap, delta, ms, positions) + 1e-3


def setup() -> tuple[Any, Delta, ReplayInput]:
    tok = word_tokenizer(chat_template=CHATML)
    model = tiny_model("llama")
    encoded = encode_pairs(tok, random_pairs(3))
    return (
        model,
        make_delta(model, "lora"),
        ReplayInput(encoded, pair_batch(encoded, range(3), 0), 0),
    )


def test_a_failing_or_inexact_runner_is_passed_over(caplog: pytest.LogCaptureFixture) -> None:
    model, delta, inputs = setup()
    good = StackedRunner(model, 1)
    found = exact_runner([Broken(), Off(model, 1), good], inputs, delta, "all")  # type: ignore[list-item]
    assert found is not None and found[0] is good
    assert replay_excess(Broken(), Broken().capture(inputs), delta, "all") == float("inf")  # type: ignore[arg-type]
    off = Off(model, 1)
    assert replay_excess(off, off.capture(inputs), delta, "all") > 0


def test_no_exact_runner_warns_and_returns_none(caplog: pytest.LogCaptureFixture) -> None:
    model, delta, inputs = setup()
    with caplog.at_level(logging.WARNING):
        found = exact_runner([Off(model, 1)], inputs, delta, "all", what="training", model_name="M")
    assert found is None
    assert "no fast training path reproduces M's forward pass; using the naive path" in caplog.text


class MixesRows(StackedRunner):
    """Right when it replays one multiplier, wrong as soon as several share a batch (each row
    leaks a little of the next copy's result, as a wrongly expanded argument would)."""

    name = "mixes"

    def run(self, cap: Any, delta: Delta, ms: Sequence[float], positions: Any) -> torch.Tensor:
        out = super().run(cap, delta, ms, positions)
        if len(ms) == 1:
            return out
        return out + 1e-2 * (out.roll(1, dims=0) - out)


def test_the_check_replays_several_multipliers_in_one_batch() -> None:
    """A replay that is exact for one multiplier alone but mixes the rows of an expanded batch
    is refused: the self-check runs ``CHECK_MS`` (a non-zero m among zeros) together."""
    model, delta, inputs = setup()
    assert CHECK_MS.count(0.0) >= 2 and any(m != 0.0 for m in CHECK_MS)
    mixes = MixesRows(model, 1)
    cap = mixes.capture(inputs)
    assert torch.allclose(mixes.run(cap, delta, [0.0], "all")[0], cap.base, atol=1e-5)
    assert replay_excess(mixes, cap, delta, "all") > 0
    assert exact_runner([mixes], inputs, delta, "all") is None


def test_the_spread_is_measured_only_below_float32() -> None:
    """float32 keeps its fixed bar (the spread is not measured); a bfloat16 model's bar is the
    naive path's own change across batchings, which is non-zero and well under a nat."""
    model, _, inputs = setup()
    reference = ordinary_nll(model, inputs.batch)
    assert batching_spread(model, inputs, reference) == 0.0
    half = tiny_model("llama", dtype=torch.bfloat16)
    reference = ordinary_nll(half, inputs.batch)
    spread = batching_spread(half, inputs, reference)
    assert 0.0 < spread < 0.1
    one = ReplayInput(inputs.encoded[:1], pair_batch(inputs.encoded, [0], 0), 0)
    assert batching_spread(half, one, ordinary_nll(half, one.batch)) >= 0.0


@given(st.floats(0.0, 1e3), st.floats(0.0, 1e-2))
def test_the_spread_only_widens_the_tolerance(ref: float, spread: float) -> None:
    a = torch.tensor([ref + 3e-4], dtype=torch.float64)
    b = torch.tensor([ref], dtype=torch.float64)
    assert excess(a, b, spread) <= excess(a, b)
    assert excess(a, b, spread) == pytest.approx(
        3e-4 - max(ABS_TOL, SPREAD_FACTOR * spread) - REL_TOL * ref, abs=1e-9
    )
    assert excess(torch.tensor([float("nan")]), b) == float("inf")
