"""The command line (slow: the demo runs the real default model)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from unisteer import save_delta
from unisteer.cli import main
from unisteer.experiment.demo import DemoResult, format_side_by_side


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


def test_data_inspect_reports_problems(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"q": "Hi?", "p": "Hello there.", "n": "Go away."}\n'
        '{"q": "Hi?", "p": "", "n": "Go away."}\n'
        "{broken\n"
    )
    args = [
        "data",
        "inspect",
        str(path),
        "--field",
        "query=q",
        "--field",
        "positive=p",
        "--field",
        "negative=n",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "d: 1 pairs" in out
    assert "problems: 2 rows skipped" in out
    assert "d.jsonl:2: field 'p': empty completion" in out
    assert "d.jsonl:3: not valid JSON" in out
    assert main([*args, "--fail-on-problems"]) == 1


def test_data_inspect_default_and_shared(shared_data, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["data", "inspect", "default:optimism"]) == 0
    out = capsys.readouterr().out
    assert "optimism: 160 pairs" in out and "splits: test 32, train 128" in out
    caa = shared_data / "caa/test/power-seeking-inclination/test_dataset_ab.json"
    assert main(["data", "inspect", str(caa), "--examples", "1"]) == 0
    assert "test_dataset_ab: 50 pairs" in capsys.readouterr().out
    myopic = (
        shared_data / "anthropic_evals/advanced-ai-risk/human_generated_evals/myopic-reward.jsonl"
    )
    assert main(["data", "inspect", str(myopic)]) == 2
    assert "--invert / --no-invert" in capsys.readouterr().err
    assert main(["data", "inspect", str(myopic), "--no-invert"]) == 0


def test_sweep_command_end_to_end(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    import pandas as pd

    from conftest import make_delta
    from tiny_models import tiny_model
    from tiny_pairs import random_pairs
    from tiny_tokenizers import CHATML, word_tokenizer

    model = tiny_model("llama")
    model.save_pretrained(tmp_path / "model")
    tok = word_tokenizer(chat_template=CHATML)
    tok.save_pretrained(tmp_path / "model")
    save_delta(make_delta(model, "lora"), tmp_path / "delta")
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in random_pairs(5)))
    args = [
        "sweep",
        "--model",
        str(tmp_path / "model"),
        "--delta",
        str(tmp_path / "delta"),
        "--data",
        str(data),
        "--ms",
        "-2:2:5",
        "--out",
        str(tmp_path / "out"),
    ]
    assert main(args) == 0
    table = pd.read_parquet(tmp_path / "out" / "sweep.parquet")
    assert len(table) == 25 and sorted(table.m.unique()) == [-2.0, -1.0, 0.0, 1.0, 2.0]
    out = capsys.readouterr().out
    assert "pref_odds" in out and "sweep.parquet" in out
    assert main([*args[:-4], "--ms", "1:x", "--out", str(tmp_path / "o2")]) == 2
    assert "argument --ms: cannot read the multiplier grid '1:x'" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize("level", ["0.3", "1", "high"])
def test_a_bad_budget_level_is_refused_while_parsing(
    level: str, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from pathlib import Path

    out = Path(str(tmp_path)) / "fit"
    with pytest.raises(SystemExit) as stopped:
        main(["fit", str(Path(str(tmp_path)) / "sweep.parquet"), "--out", str(out),
              "--budget-level", level])  # fmt: skip
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "argument --budget-level" in err and "[0.5, 1)" in err
    assert not out.exists()  # refused before anything is read or written
