"""The command line (slow: the demo runs the real default model)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from unisteer.cli import main
from unisteer.demo import DemoResult, format_side_by_side


def test_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "unisteer.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("unisteer ")


def test_side_by_side_layout() -> None:
    text = format_side_by_side(DemoResult("p", 15, 80.0, "a " * 40, "b " * 10), width=60)
    lines = text.splitlines()
    assert lines[3].startswith("unsteered") and "m = 80.0" in lines[3]
    assert all(" | " in line for line in lines[5:])


@pytest.mark.slow
def test_demo_prints_two_different_completions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--max-new-tokens", "16"]) == 0
    out = capsys.readouterr().out
    rows = [line.split(" | ") for line in out.splitlines()[5:]]
    left = " ".join(r[0].strip() for r in rows)
    right = " ".join(r[1].strip() for r in rows if len(r) > 1)
    assert left and right and left != right


def test_cli_reports_unisteer_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--model", "/nonexistent/model"]) == 2
    assert "unisteer: error: cannot load model" in capsys.readouterr().err
