"""Bad input gets one clear ``unisteer: error:`` line (exit 2) before any work starts; a bug
gets one line naming a log file (exit 1); two processes never share an output folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

import unisteer.model.load as load_module
from unisteer import DeltaLoadError, SiteError, load_delta, new_delta, save_delta
from unisteer.cli import main
from unisteer.errors import UsageError
from unisteer.files import OutputLock, check_output_dir
from unisteer.training.checkpoint import (
    CheckpointError,
    LoopState,
    load_checkpoint,
    save_checkpoint,
)

from conftest import make_delta
from tiny_models import tiny_model

PAIRS = '{"query": "Hi?", "positive": "Hello there.", "negative": "Go away."}\n'


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a command loads a model: its input should be refused first."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model was loaded before the bad input was reported")

    monkeypatch.setattr(load_module, "load_model", refuse)


def error_of(capsys: pytest.CaptureFixture[str], argv: list[str], status: int = 2) -> str:
    assert main(argv) == status
    err = capsys.readouterr().err
    assert err.startswith("unisteer: error: ") and "Traceback" not in err
    return err


def test_a_directory_is_not_a_data_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for d in (tmp_path / "plain", tmp_path / "x.jsonl"):
        d.mkdir()
        err = error_of(capsys, ["data", "inspect", str(d)])
        assert "is a directory, not a data file" in err and str(d) in err


def test_outputs_that_are_files_are_refused_before_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model: None
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(PAIRS)
    afile = tmp_path / "taken"
    afile.write_text("x")
    for out in (afile, afile / "below"):
        err = error_of(capsys, ["train", "--data", str(data), "--out", str(out)])
        assert "a file, not a folder" in err
        err = error_of(
            capsys, ["sweep", "--delta", str(tmp_path), "--data", str(data), "--out", str(out)]
        )
        assert "a file, not a folder" in err
    exp = tmp_path / "e.toml"
    exp.write_text(f'output = "{afile}"\n[[method]]\nkind = "vector"\nobjective = "diffmean"\n')
    err = error_of(capsys, ["run", str(exp)])
    assert f"{exp}:1: output:" in err and "a file, not a folder" in err


@pytest.mark.parametrize(
    ("line", "wanted"),
    [
        ("epochs = 1.5", "epochs must be an integer, got 1.5"),
        ('epochs = "one"', "epochs must be an integer, got 'one'"),
        ("lr = nan", "lr must be a finite number"),
    ],
)
def test_training_values_are_typed_at_parse_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model: None, line: str, wanted: str
) -> None:
    exp = tmp_path / "e.toml"
    exp.write_text(f'[train]\n{line}\n[[method]]\nkind = "vector"\nobjective = "sft"\n')
    err = error_of(capsys, ["run", str(exp)])
    assert f"{exp}:2: train." in err and wanted in err


def test_layers_and_formats_are_checked_at_parse_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model: None
) -> None:
    exp = tmp_path / "e.toml"
    method = '[[method]]\nkind = "vector"\nobjective = "sft"\n'
    exp.write_text("[model]\nlayer = -1\n" + method)
    assert "not counted from the end" in error_of(capsys, ["run", str(exp)])
    exp.write_text('[data]\nformat = "jsonl"\n' + method)
    assert "data.format: expected one of" in error_of(capsys, ["run", str(exp)])
    data = tmp_path / "d.jsonl"
    data.write_text(PAIRS)
    err = error_of(
        capsys, ["train", "--data", str(data), "--out", str(tmp_path / "o"), "--layer", "-5"]
    )
    assert "--layer: must be 0 or more" in err
    with pytest.raises(SiteError, match="not counted from the end"):
        new_delta(tiny_model("llama"), "vector", -1)


def test_huge_or_bad_grids_are_refused_before_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model: None
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(PAIRS)
    base = ["sweep", "--delta", str(tmp_path), "--data", str(data), "--out", str(tmp_path / "o")]
    assert "more than 1001 points" in error_of(capsys, [*base, "--ms", "-4:4:50000000"])
    assert "cannot read the multiplier grid" in error_of(capsys, [*base, "--ms", "a:b"])


def _saved(tmp_path: Path) -> Path:
    model = tiny_model("llama")
    return save_delta(make_delta(model, "vector"), tmp_path / "d")


@pytest.mark.parametrize(
    ("change", "wanted"),
    [
        ({"fingerprint": "abc"}, "'fingerprint' should be dict or null, got str"),
        ({"meta": [1, 2]}, "'meta' should be dict, got list"),
        ({"layer": "3"}, "'layer' should be int or null, got str"),
    ],
)
def test_delta_json_is_checked_key_by_key(
    tmp_path: Path, change: dict[str, Any], wanted: str
) -> None:
    d = _saved(tmp_path)
    meta = json.loads((d / "delta.json").read_text())
    meta.update(change)
    (d / "delta.json").write_text(json.dumps(meta))
    with pytest.raises(DeltaLoadError, match=wanted):
        load_delta(d)


def test_deep_huge_or_special_delta_files_are_refused(tmp_path: Path) -> None:
    d = _saved(tmp_path)
    text = (d / "delta.json").read_text()
    (d / "delta.json").write_text(text[:-2] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(DeltaLoadError, match="nested"):
        load_delta(d)
    d2 = _saved(tmp_path / "b")
    (d2 / "delta.safetensors").unlink()
    os.symlink("/dev/zero", d2 / "delta.safetensors")
    with pytest.raises(DeltaLoadError, match="not a regular file"):
        load_delta(d2)


def test_a_delta_with_nan_is_refused(tmp_path: Path) -> None:
    model = tiny_model("llama")
    delta = make_delta(model, "vector")
    with torch.no_grad():
        delta.bias_[3] = float("nan")
    with pytest.raises(DeltaLoadError, match="NaN or infinite"):
        load_delta(save_delta(delta, tmp_path / "d"))


def test_a_checkpoint_missing_a_key_names_it(tmp_path: Path) -> None:
    delta = make_delta(tiny_model("llama"), "vector")
    opt = torch.optim.Adam(delta.parameters())
    out = save_checkpoint(tmp_path / "c", delta, opt, LoopState(), {"lr": 0.1})
    state = json.loads((out / "checkpoint.json").read_text())
    del state["epoch"]
    (out / "checkpoint.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="missing key 'epoch'"):
        load_checkpoint(out, delta, opt, {"lr": 0.1})
    state["epoch"] = "two"
    (out / "checkpoint.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="'epoch' should be int"):
        load_checkpoint(out, delta, opt, {"lr": 0.1})


def test_an_internal_error_names_its_log_and_debug_shows_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    import unisteer.cli as cli

    def bug(args: Any) -> int:
        raise ZeroDivisionError("a bug")

    def parser() -> argparse.ArgumentParser:
        p = argparse.ArgumentParser()
        p.add_argument("--debug", action="store_true")
        p.set_defaults(func=bug)
        return p

    monkeypatch.setattr(cli, "build_parser", parser)
    assert main([]) == 1
    err = capsys.readouterr().err
    assert err.startswith("unisteer: internal error (ZeroDivisionError: a bug)")
    log = Path(err.split("the traceback is in ")[1].split(". ")[0])
    assert "Traceback" in log.read_text() and "ZeroDivisionError" in log.read_text()
    log.unlink()
    with pytest.raises(ZeroDivisionError):
        main(["--debug"])


def test_an_output_folder_is_held_by_one_process(tmp_path: Path) -> None:
    """A second process on the same output folder is refused at once, naming the holder; the
    lock goes with the holder, also when it is killed."""
    folder = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from unisteer.files import OutputLock
                with OutputLock({str(folder)!r}):
                    print("held", flush=True)
                    time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(
                UsageError, match=rf"in use by another unisteer process \(pid {holder.pid}\)"
            ),
            OutputLock(folder),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    with OutputLock(folder), OutputLock(folder):  # free again; re-entrant within a process
        pass
    with pytest.raises(UsageError):
        check_output_dir(folder / ".unisteer.lock" / "x")


def _with_long_pair(tmp_path: Path, words: int) -> Path:
    data = tmp_path / "d.jsonl"
    long = " ".join(["blue"] * words)
    rows = [PAIRS, json.dumps({"query": "Hi?", "positive": long, "negative": "no"}) + "\n"]
    rows.append('{"query": "Is the sea blue?", "positive": "Yes.", "negative": "No."}\n')
    data.write_text("".join(rows))
    return data


def test_a_pair_longer_than_the_context_window_is_refused_with_its_line(tmp_path: Path) -> None:
    from unisteer import load_pairs, sweep, train
    from unisteer.data.tokens import within_limit
    from unisteer.errors import DataError

    from tiny_tokenizers import CHATML, word_tokenizer

    data = _with_long_pair(tmp_path, 300)  # 300 tokens > the tiny models' 128 positions
    pairs = load_pairs(data)
    model = tiny_model("llama")
    tok = word_tokenizer(chat_template=CHATML)
    said = (
        rf"{data}:2: pair 'd-2': prompt and completion are \d+ tokens, more than the limit of 128"
    )
    with pytest.raises(DataError, match=said):
        sweep(model, tok, pairs, make_delta(model, "vector"), [0.0, 1.0], progress=False)
    with pytest.raises(DataError, match=said):
        train(model, tok, pairs, kind="vector", objective="sft", layer=1, epochs=1)
    with pytest.raises(DataError, match=said):
        train(model, tok, pairs, kind="vector", objective="diffmean", layer=1)
    # strict filtering says the same and how to skip; lenient filtering skips and records it
    with pytest.raises(DataError, match=said + ".*--lenient"):
        within_limit(tok, pairs, 128)
    kept = within_limit(tok, pairs, 128, strict=False)
    assert [p.id for p in kept] == ["d-1", "d-3"]
    assert [str(x) for x in kept.problems] == [
        f"{data}:2: pair 'd-2': prompt and completion are 307 tokens, more than the limit of "
        "128; skipped"
    ]
    sweep(model, tok, kept, make_delta(model, "vector"), [0.0, 1.0], progress=False)
    # a user's bound below the window
    short = within_limit(tok, kept, 11, strict=False)
    assert [p.id for p in short] == ["d-1"] and len(short.problems) == 2


def test_a_pair_no_machine_could_hold_is_refused_before_anything_is_allocated(
    tmp_path: Path,
) -> None:
    """Bloom (ALiBi) has no context window: only the memory check bounds it. The issue's
    one-pair 5 MB file asked for a terabyte and died at 5 GB of RSS; now the longest pair's
    estimate is compared with the memory free before any forward pass."""
    import resource

    from unisteer import load_pairs, sweep, train
    from unisteer.errors import DataError

    from tiny_tokenizers import CHATML, word_tokenizer

    data = _with_long_pair(tmp_path, 400_000)  # 2 MB of text
    pairs = load_pairs(data)
    model = tiny_model("bloom")
    tok = word_tokenizer(chat_template=CHATML)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    said = rf"{data}:2: pair 'd-2': {{}} its 400007 tokens needs about [\d,]+ MiB, more than the"
    with pytest.raises(DataError, match=said.format("scoring")):
        sweep(model, tok, pairs, make_delta(model, "vector"), [0.0, 1.0], progress=False)
    with pytest.raises(DataError, match=said.format("training on")):
        train(model, tok, pairs, kind="vector", objective="sft", layer=1, epochs=1)
    with pytest.raises(DataError, match=said.format("DiffMean's forward pass over")):
        train(model, tok, pairs, kind="vector", objective="diffmean", layer=1)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 1000, grown_mb
    sweep(model, tok, pairs[::2], make_delta(model, "vector"), [0.0, 1.0], progress=False)


def test_lenient_commands_skip_long_pairs_and_list_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from unisteer.data import PairSet

    from tiny_pairs import random_pairs
    from tiny_tokenizers import CHATML, word_tokenizer

    model_dir = tmp_path / "m"
    tiny_model("llama").save_pretrained(model_dir)
    word_tokenizer(chat_template=CHATML).save_pretrained(model_dir)
    capsys.readouterr()
    data = PairSet(random_pairs(10, seed=1)).to_jsonl(tmp_path / "p.jsonl")
    long = json.dumps({"query": "Hi?", "positive": " ".join(["sea"] * 300), "negative": "no"})
    data.write_text(data.read_text() + long + "\nnot json\n")
    common = ["--model", str(model_dir), "--data", str(data), "--layer", "1"]
    out = tmp_path / "delta"
    # strict (the default): the first bad line stops it, before the model loads
    err = error_of(capsys, ["train", *common, "--out", str(out)])
    assert f"{data}:12:" in err
    args = ["train", *common, "--out", str(out), "--objective", "diffmean", "--lenient"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"unisteer: skipped {data}:11: pair 'p-11': prompt and completion are" in err
    log = json.loads((out / "training_log.json").read_text())
    assert len(log["skipped"]) == 2 and f"{data}:12" in log["skipped"][0]
    sweep_out = tmp_path / "sweep"
    args = ["sweep", "--model", str(model_dir), "--delta", str(out), "--data", str(data)]
    args += ["--ms", "-1:1:3", "--out", str(sweep_out), "--lenient", "--max-tokens", "40"]
    assert main(args) == 0
    meta = json.loads((sweep_out / "sweep.json").read_text())
    assert meta["skipped"][1].startswith(f"{data}:11: pair 'p-11'")
    assert meta["n_pairs"] + len(meta["skipped"]) == 12
    capsys.readouterr()
    assert "--max-tokens: must be at least 1" in error_of(capsys, [*args[:-1], "0"])


def test_empty_binary_and_one_pair_files_say_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model: None
) -> None:
    empty, binary, one = tmp_path / "e.jsonl", tmp_path / "b.jsonl", tmp_path / "o.jsonl"
    empty.write_text("")
    binary.write_bytes(b'{"query": "a"}\n\xff\xfe garbage\n')
    one.write_text(PAIRS)
    out = str(tmp_path / "out")
    assert "no pairs" in error_of(capsys, ["train", "--data", str(empty), "--out", out])
    assert f"{binary}:2: not valid UTF-8" in error_of(capsys, ["data", "inspect", str(binary)])
    err = error_of(capsys, ["train", "--data", str(one), "--out", out])
    assert "has 1 training pair(s): too few to hold out a validation split" in err


def test_ctrl_c_inside_a_finalizer_is_delivered_again_not_printed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Python can only print and drop a KeyboardInterrupt raised in a weakref callback; the CLI's
    hook hands it back to the main thread, so the run still stops with ``interrupted``."""
    import time
    import types

    from unisteer.cli import _redeliver_interrupt

    caught = False
    try:
        _redeliver_interrupt(types.SimpleNamespace(exc_type=KeyboardInterrupt))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.01)
    except KeyboardInterrupt:
        caught = True
    assert caught
    assert "Traceback" not in capsys.readouterr().err
