"""Real ``unisteer`` processes: two runs with different settings on one output folder never mix
(the second is refused while the first holds the folder, and every rerun equals a run alone),
and SIGINT or SIGKILL of ``run`` and ``train`` followed by a rerun gives identical results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from unisteer.data import PairSet

from tiny_models import tiny_model
from tiny_pairs import random_pairs
from tiny_tokenizers import CHATML, word_tokenizer

pytestmark = pytest.mark.slow

EXPERIMENT = """\
name = "two"

[model]
name = "{model}"
layer = 1

[data]
source = "{data}"

[train]
epochs = {epochs}
batch_size = 2
checkpoint_every = 1

[sweep]
points = 7

[fit]
starts = 4

[[method]]
kind = "vector"
objective = "diffmean"

[[method]]
kind = "lora"
objective = "split"
grid = "-3:3:7"
[method.train]
lr = {lr}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A saved tiny model, data, two experiments that differ in the LoRA's learning rate (the
    issue's case) and the epochs, and each one's results run alone."""
    root = tmp_path_factory.mktemp("processes")
    model = root / "model"
    tiny_model("llama").save_pretrained(model)
    word_tokenizer(chat_template=CHATML).save_pretrained(model)
    data = PairSet(random_pairs(14, seed=4)).to_jsonl(root / "pairs.jsonl")
    exps = {}
    for name, lr, epochs in (("a", 0.05, 4), ("b", 0.02, 3)):
        exps[name] = root / f"{name}.toml"
        exps[name].write_text(EXPERIMENT.format(model=model, data=data, lr=lr, epochs=epochs))
    solo = {n: start(["run", str(e), "--out", str(root / f"solo-{n}")]) for n, e in exps.items()}
    for name, proc in solo.items():
        assert finish(proc) == 0, name
    return {"root": root, "model": model, "data": data, "exps": exps}


def start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "unisteer", *args, "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> int:
    out, err = proc.communicate(timeout=timeout)
    proc.stdout_text, proc.stderr_text = out, err  # type: ignore[attr-defined]
    assert "Traceback" not in err, err
    return proc.returncode


def when(condition: Callable[[], bool], proc: subprocess.Popen[str], timeout: float = 120) -> None:
    """Wait until ``condition()`` holds (while ``proc`` still runs)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the process ended before the moment to interrupt it"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def numbers(out: Path) -> Any:
    """``results.json`` without what differs between equal runs: times, memory, versions and
    the output folder's own name."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            drop = ("seconds", "timings", "peak_memory", "versions", "dir")
            return {k: clean(v) for k, v in value.items() if not any(d in k for d in drop)}
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, str):
            return value.replace(str(out), "<out>")
        return value

    return clean(json.loads((out / "results.json").read_text()))


def deltas(out: Path) -> dict[str, bytes]:
    return {
        p.parent.parent.name: p.read_bytes()
        for p in sorted((out / "methods").glob("*/delta/delta.safetensors"))
    }


def same_as_alone(world: dict[str, Any], name: str, out: Path) -> None:
    alone = world["root"] / f"solo-{name}"
    assert numbers(out) == numbers(alone)
    assert deltas(out) == deltas(alone)


def test_two_runs_with_different_settings_on_one_folder_never_mix(world: dict[str, Any]) -> None:
    shared = world["root"] / "shared"
    a_solo, b_solo = (numbers(world["root"] / f"solo-{n}") for n in "ab")
    lora = next(m for m in a_solo["methods"] if m["name"] == "lora-split")
    other = next(m for m in b_solo["methods"] if m["name"] == "lora-split")
    assert lora["hparams"]["lr"] != other["hparams"]["lr"] and lora["fit"] != other["fit"]

    # Both start together: whichever takes the folder first runs, the other is refused at once
    # (each spends seconds importing before it asks, and a run takes longer than that).
    procs = {n: start(["run", str(world["exps"][n]), "--out", str(shared)]) for n in "ab"}
    codes = {n: finish(p) for n, p in procs.items()}
    assert sorted(codes.values()) == [0, 2], codes
    winner = next(n for n, c in codes.items() if c == 0)
    loser = "b" if winner == "a" else "a"
    said = procs[loser].stderr_text  # type: ignore[attr-defined]
    assert "unisteer: error: " in said
    assert f"in use by another unisteer process (pid {procs[winner].pid})" in said
    same_as_alone(world, winner, shared)

    # The refused run now runs on the winner's folder: every stage written under the other
    # settings is redone, none kept.
    again = start(["run", str(world["exps"][loser]), "--out", str(shared)])
    assert finish(again) == 0
    same_as_alone(world, loser, shared)
    # and a rerun of the winner keeps nothing the other wrote (the poisoned fit)
    back = start(["run", str(world["exps"][winner]), "--out", str(shared)])
    assert finish(back) == 0
    assert "lora-split\n  train: done before" not in back.stdout_text  # type: ignore[attr-defined]
    same_as_alone(world, winner, shared)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_an_interrupted_run_reruns_to_identical_results(world: dict[str, Any], sig: int) -> None:
    out = world["root"] / f"run-{sig}"
    args = ["run", str(world["exps"]["a"]), "--out", str(out)]
    proc = start(args)
    checkpoint = out / "methods" / "lora-split" / "checkpoint" / "checkpoint.json"
    when(checkpoint.is_file, proc)  # the second method is training
    proc.send_signal(sig)
    code = finish(proc)
    assert code == (130 if sig == signal.SIGINT else -signal.SIGKILL)
    assert not (out / "results.json").exists()
    rerun = start(args)
    assert finish(rerun) == 0
    assert "[1/2] vector-diffmean\n  train: done before" in rerun.stdout_text  # type: ignore[attr-defined]
    same_as_alone(world, "a", out)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_an_interrupted_train_resumes_to_the_same_delta(world: dict[str, Any], sig: int) -> None:
    common = ["train", "--model", str(world["model"]), "--data", str(world["data"])]
    common += ["--kind", "lora", "--objective", "split", "--layer", "1", "--epochs", "6"]
    common += ["--batch-size", "2", "--checkpoint-every", "1"]
    whole = world["root"] / f"train-whole-{sig}"
    cut = world["root"] / f"train-cut-{sig}"
    base = start([*common, "--out", str(whole)])
    proc = start([*common, "--out", str(cut)])
    state = cut / "checkpoint" / "checkpoint.json"

    def mid_training() -> bool:
        try:
            return json.loads(state.read_text())["step"] >= 3
        except (OSError, ValueError):
            return False

    when(mid_training, proc)
    proc.send_signal(sig)
    assert finish(proc) == (130 if sig == signal.SIGINT else -signal.SIGKILL)
    assert not (cut / "delta.safetensors").exists()
    assert finish(base) == 0
    resumed = start([*common, "--out", str(cut), "--resume"])
    assert finish(resumed) == 0
    assert (cut / "delta.safetensors").read_bytes() == (whole / "delta.safetensors").read_bytes()
    logs = [json.loads((d / "training_log.json").read_text()) for d in (whole, cut)]
    for log in logs:
        for row in log["history"]:
            row.pop("seconds", None)
    assert logs[0] == logs[1]
    assert os.path.getsize(cut / "delta.json") > 0
