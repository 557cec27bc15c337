"""``torchrun -m unisteer run``: two ranks on loopback give the single process's numbers, also
when one of them is killed mid-run and torchrun restarts the job (slow: torchrun starts real
processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tiny_models import tiny_model
from tiny_pairs import split_pairs_file
from tiny_tokenizers import CHATML, word_tokenizer

pytestmark = pytest.mark.slow

EXPERIMENT = """\
name = "ranked"

[model]
name = "{model}"
layer = 1

[data]
source = ["{a}", "{b}"]
train_pairs = 6
test_pairs = 4
sweep_train_pairs = 3

[train]
epochs = 1
batch_size = 4

[sweep]
points = 7

[fit]
starts = 4

[report]
samples = 1
tokens = 4

[[method]]
kind = "vector"
objective = "diffmean"

[[method]]
kind = "lora"
objective = "sft"
grid = "-3:3:7"

[[method]]
kind = "vector"
objective = "split"
grid = "-3:3:7"
"""


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("torchrun")
    model_dir = root / "model"
    tiny_model("llama").save_pretrained(model_dir)
    word_tokenizer(chat_template=CHATML).save_pretrained(model_dir)
    sources = []
    for name, seed in (("alpha", 4), ("beta", 9)):
        (root / name).mkdir()
        sources.append(split_pairs_file(root / name, seed=seed).rename(root / f"{name}.jsonl"))
    path = root / "ranked.toml"
    path.write_text(EXPERIMENT.format(model=model_dir, a=sources[0], b=sources[1]))
    return path


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return dict(
        os.environ,
        OMP_NUM_THREADS="1",  # the same kernels in every process: the same float sums
        PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
        HF_HUB_OFFLINE="1",
    )


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
            "--standalone", *args]  # fmt: skip


def _run(argv: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _numbers(value: Any, root: Path) -> Any:
    """``value`` without times, memory and the output folder's name."""
    if isinstance(value, dict):
        return {
            k: _numbers(v, root)
            for k, v in value.items()
            if "seconds" not in k and k != "peak_memory_mb"
        }
    if isinstance(value, list):
        return [_numbers(v, root) for v in value]
    if isinstance(value, str):
        return value.replace(str(root), "<out>")
    return value


def _results(out: Path) -> Any:
    return _numbers(json.loads((out / "results.json").read_text()), out)


@pytest.fixture(scope="module")
def single(experiment: Path) -> Any:
    out = experiment.parent / "single"
    _run([sys.executable, "-m", "unisteer", "run", str(experiment), "--out", str(out),
          "--no-progress"])  # fmt: skip
    return _results(out)


def test_two_ranks_give_the_single_process_numbers(experiment: Path, single: Any) -> None:
    out = experiment.parent / "two-ranks"
    done = _run(
        _torchrun("-m", "unisteer", "run", str(experiment), "--out", str(out), "--no-progress")
    )
    assert "rank 0/2: 3 of 6" in done.stdout and "rank 1/2: 3 of 6" in done.stdout
    assert _results(out) == single
    assert (out / "report.html").is_file() and (out / "concepts" / "beta" / "report.html").is_file()


def _worker_pids(rank: int) -> list[int]:
    """The pids of torchrun workers of ``rank`` that run unisteer (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if (
            f"RANK={rank}".encode() in environ
            and b"TORCHELASTIC_RUN_ID" in b" ".join(environ)
            and b"unisteer" in cmdline
        ):
            found.append(int(entry.name))
    return found


def test_a_killed_rank_is_restarted_and_resumes(experiment: Path, single: Any) -> None:
    out = experiment.parent / "killed"
    argv = _torchrun("--max-restarts=1", "-m", "unisteer", "run", str(experiment), "--out",
                     str(out), "--no-progress")  # fmt: skip
    job = subprocess.Popen(
        argv, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    # rank 1 runs the second concept; kill it once its first stage is written
    first_stage = out / "concepts" / "beta" / "methods" / "vector-diffmean" / "delta" / "stage.json"
    deadline = time.monotonic() + 300
    killed: list[int] = []
    while time.monotonic() < deadline and job.poll() is None:
        if first_stage.is_file():
            killed = _worker_pids(1)
            for pid in killed:
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    log, _ = job.communicate(timeout=600)
    assert killed, "rank 1 was not found running: " + log[-2000:]
    assert job.returncode == 0, log[-3000:]
    assert "train: done before" in log  # the restarted job skipped what was written
    assert _results(out) == single
