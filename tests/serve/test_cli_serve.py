"""``unisteer serve`` as a process: it loads an experiment's deltas, prints its address, answers
on loopback and stops cleanly on Ctrl-C; bad arguments get one clear line."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from serve_helpers import served  # noqa: F401 (fixture used by name)

pytestmark = pytest.mark.slow  # a real process that loads torch and the model


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
                PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")  # fmt: skip


def test_serve_answers_and_stops_on_ctrl_c(served: dict[str, Any]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "unisteer", "serve", "--model", str(served["model_dir"]),
         "--experiment", str(served["out"]), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"at (http://127\.0\.0\.1:\d+) \(deltas: (.*?);", line)
        assert found, line + proc.stderr.read() if proc.stderr else line
        url, names = found.groups()
        assert names == "lora-sft, vector-diffmean"
        models = json.loads(urllib.request.urlopen(url + "/v1/models", timeout=30).read())
        assert [d["name"] for d in models["deltas"]] == ["lora-sft", "vector-diffmean"]
        steering = [{"delta": "vector-diffmean", "m": 2}]
        body = json.dumps({"messages": [{"role": "user", "content": "good"}], "max_tokens": 3,
                           "steering": steering}).encode()  # fmt: skip
        req = urllib.request.Request(url + "/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        answer = json.loads(urllib.request.urlopen(req, timeout=60).read())
        assert answer["choices"][0]["finish_reason"] in ("stop", "length")
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "stopped" in out and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--delta", "nonsense"], "argument --delta: expected NAME=DIR"),
        (["--delta", "a=/no/such/folder"], "--delta a=/no/such/folder: no such file or folder"),
        (["--experiment", "/no/such/run"], "--experiment /no/such/run: no methods"),
        (["--port", "70000"], "argument --port: 70000 is not a port"),
    ],
)
def test_bad_arguments_get_one_line(served: dict[str, Any], args: list[str], says: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "unisteer", "serve", "--model", str(served["model_dir"]), *args],
        capture_output=True, text=True, env=_env(), timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr, done.stderr
