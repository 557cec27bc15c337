"""Lint and type checks run as part of the test suite, so CI's one command covers them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is installed with .[test]")
def test_ruff_clean() -> None:
    paths = [p for p in ("src", "tests", "benchmarks", "scripts") if (ROOT / p).is_dir()]
    out = run("ruff", "check", *paths)
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_clean() -> None:
    out = run(sys.executable, "-m", "mypy")
    assert out.returncode == 0, out.stdout + out.stderr
