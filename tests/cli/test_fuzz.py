"""Fuzzing what users hand us: malformed data rows, TOML experiments, ``delta.json``,
checkpoint JSON and command lines. Every case either works or ends with exit status 2 and one
``unisteer: error:`` line: never a traceback, never exit 1 (a bug). Models are never loaded:
reaching the model load counts as success (the input passed every check before it)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unisteer.experiment.demo as demo_module
import unisteer.experiment.runner as runner_module
import unisteer.model.load as load_module
from unisteer import DeltaLoadError, load_delta, save_delta
from unisteer.cli import main
from unisteer.errors import UnisteerError
from unisteer.training.checkpoint import (
    CheckpointError,
    LoopState,
    load_checkpoint,
    save_checkpoint,
)

from conftest import make_delta
from tiny_models import tiny_model

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Reached(UnisteerError):
    """Raised instead of loading a model: the input got past every check."""


@pytest.fixture(autouse=True)
def no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    def reached(*args: Any, **kwargs: Any) -> Any:
        raise Reached("reached the model load")

    for module in (load_module, runner_module, demo_module):
        monkeypatch.setattr(module, "load_model", reached)


def outcome(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        status = main(argv)
    except SystemExit as e:  # argparse's own usage errors: exit 2 with a usage line
        assert e.code in (0, 2), argv
        capsys.readouterr()
        return
    err = capsys.readouterr().err
    assert status in (0, 2), (argv, err)
    assert "Traceback" not in err, (argv, err)
    if status == 2:
        assert err.startswith("unisteer: error: "), (argv, err)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
rows = st.dictionaries(
    st.sampled_from(["query", "positive", "negative", "id", "split", "meta", "x"]),
    json_values,
    max_size=5,
)


@SETTINGS
@given(lines=st.lists(rows | st.text(max_size=30) | st.binary(max_size=20), max_size=5))
def test_data_files(tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[Any]) -> None:
    blob = b"\n".join(
        x if isinstance(x, bytes) else (json.dumps(x) if isinstance(x, dict) else x).encode()
        for x in lines
    )
    for suffix in (".jsonl", ".csv", ".json"):
        path = tmp_path / f"d{suffix}"
        path.write_bytes(blob)
        outcome(["data", "inspect", str(path)], capsys)
        outcome(["train", "--data", str(path), "--out", str(tmp_path / "o")], capsys)


toml_lines = st.sampled_from(
    [
        "[model]", "[data]", "[train]", "[sweep]", "[fit]", "[[method]]",
        'kind = "vector"', 'kind = "lora"', 'objective = "diffmean"', 'objective = "split"',
        "layer = -1", "layer = 3", "layer = 1e9", "epochs = 1.5", 'epochs = "one"', "epochs = 2",
        "points = 3", "points = 99999999", 'format = "jsonl"', 'source = "nowhere.jsonl"',
        'output = "/dev/null/x"', "lr = -1", "lr = nan", "batch_size = 0", "seed = true",
        'grid = "-4:4:50000000"', 'grid = "x"', "test_fraction = 2", 'name = "a b"', "= =", "[",
        "train_pairs = 0", 'positions = "middle"', "max_util_drop = inf", "x = 1",
    ]
)  # fmt: skip


@SETTINGS
@given(lines=st.lists(toml_lines, max_size=8))
def test_experiment_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str]
) -> None:
    path = tmp_path / "e.toml"
    path.write_text("\n".join(lines) + "\n")
    outcome(["run", str(path), "--out", str(tmp_path / "o")], capsys)


@SETTINGS
@given(changes=st.dictionaries(
    st.sampled_from(
        ["kind", "site", "site_kind", "layer", "d_in", "d_out", "rank", "meta", "fingerprint",
         "experts", "per_expert", "format_version", "shapes"]
    ),
    json_values,
    max_size=3,
))  # fmt: skip
def test_delta_json(tmp_path: Path, changes: dict[str, Any]) -> None:
    d = tmp_path / "d"
    if not (d / "delta.json").exists():
        save_delta(make_delta(tiny_model("llama"), "lora"), d)
    meta = json.loads((d / "delta.json").read_text())
    meta.update(changes)
    (d / "delta.json").write_text(json.dumps(meta))
    with contextlib.suppress(DeltaLoadError):  # anything else fails the test
        load_delta(d)
    (d / "delta.json").unlink()


@SETTINGS
@given(changes=st.dictionaries(
    st.sampled_from(["epoch", "micro", "step", "history", "validation", "config"]),
    json_values,
    max_size=3,
), drop=st.sampled_from([None, "epoch", "step", "config", "tensors_sha256"]))  # fmt: skip
def test_checkpoint_json(tmp_path: Path, changes: dict[str, Any], drop: str | None) -> None:
    delta = make_delta(tiny_model("llama"), "vector")
    opt = torch.optim.Adam(delta.parameters())
    out = save_checkpoint(tmp_path / "c", delta, opt, LoopState(), {"lr": 0.1})
    state = json.loads((out / "checkpoint.json").read_text())
    state.update(changes)
    if drop is not None:
        state.pop(drop, None)
    (out / "checkpoint.json").write_text(json.dumps(state))
    with contextlib.suppress(CheckpointError):  # anything else fails the test
        load_checkpoint(out, delta, opt, {"lr": 0.1})


words = st.sampled_from(
    [
        "run", "demo", "data", "inspect", "convert", "train", "sweep", "fit", "eval", "accuracy",
        "--data", "--out", "--layer", "-5", "3", "--ms", "-4:4:21", "-4:4:50000000", "1,2,x",
        "--kind", "vector", "lora", "--objective", "sft", "--epochs", "0", "1.5", "--lr", "nan",
        "--delta", "--model", "--resume", "--val-fraction", "1", "--split", "test", "--debugx",
        "default:optimism", "nowhere.jsonl", "--max-new-tokens", "--positions", "middle",
        "--multipliers", "--field", "query=q", "--format", "axbench", "--seed", "-1",
    ]
)  # fmt: skip


@SETTINGS
@given(argv=st.lists(words, max_size=8))
def test_command_lines(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    outcome(argv, capsys)
