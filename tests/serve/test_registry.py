"""What the server loads: saved deltas and steering sets by name, an experiment's methods with
their chosen m and curves, and clear refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from unisteer.core.io import save_delta, save_steering_set
from unisteer.core.steering_set import SteeringSet
from unisteer.errors import UsageError
from unisteer.serve.registry import experiment_deltas, load_all

from conftest import make_delta
from serve_helpers import served  # noqa: F401 (fixture used by name)


def test_deltas_sets_and_an_experiment(served: dict[str, Any], tmp_path: Path) -> None:
    model, tok = served["model"], served["tok"]
    a, b = make_delta(model, "vector", 1), make_delta(model, "lora", 2, seed=1)
    save_delta(a, tmp_path / "a")
    save_steering_set(SteeringSet([a, b]), tmp_path / "ab")
    loaded = load_all(
        [("a", tmp_path / "a"), ("ab", tmp_path / "ab"), *experiment_deltas(served["out"])],
        model, tok,
    )  # fmt: skip
    assert list(loaded) == ["a", "ab", "lora-sft", "vector-diffmean"]
    assert loaded["ab"].summary()["kind"] == "set" and len(loaded["ab"].summary()["sites"]) == 2
    assert loaded["a"].chosen_m is None and loaded["a"].curves is None  # not from an experiment
    assert loaded["vector-diffmean"].chosen_m is not None


def test_refusals_name_the_argument(served: dict[str, Any], tmp_path: Path) -> None:
    model, tok = served["model"], served["tok"]
    save_delta(make_delta(model, "vector", 1), tmp_path / "a")
    with pytest.raises(UsageError, match="given twice"):
        load_all([("a", tmp_path / "a"), ("a", tmp_path / "a")], model, tok)
    with pytest.raises(UsageError, match="a name is letters"):
        load_all([("a b", tmp_path / "a")], model, tok)
    with pytest.raises(UsageError, match="no such file"):
        load_all([("x", tmp_path / "missing")], model, tok)
    with pytest.raises(UsageError, match="no methods"):
        experiment_deltas(tmp_path)
