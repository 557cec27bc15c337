"""The experiment runner on a tiny model: every stage, the report, caching and resuming."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import unisteer.experiment.runner as runner_module
from unisteer.experiment import parse_experiment, run_experiment
from unisteer.fit.margin import drop_margin
from unisteer.report.results import ExperimentResults, FitOutcome

from tiny_models import tiny_model
from tiny_pairs import split_pairs_file
from tiny_tokenizers import CHATML, word_tokenizer

EXPERIMENT = """\
name = "tiny"

[data]
source = "{data}"
train_pairs = 8
test_pairs = 4
sweep_train_pairs = 4

[model]
layer = 1

[train]
epochs = 1
batch_size = 4

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
lr = 0.05
"""


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Any]:
    text = EXPERIMENT.format(data=split_pairs_file(tmp_path))
    return {
        "exp": parse_experiment(text, str(tmp_path / "tiny.toml")),
        "model": tiny_model("llama"),
        "tok": word_tokenizer(chat_template=CHATML),
        "out": tmp_path / "out",
    }


def run(setup: dict[str, Any], log: list[str] | None = None, exp: Any = None) -> ExperimentResults:
    lines = log if log is not None else []
    return run_experiment(
        exp or setup["exp"],
        out=setup["out"],
        model=setup["model"],
        tokenizer=setup["tok"],
        progress=False,
        log=lines.append,
    )


def test_run_writes_every_output_and_a_rerun_skips_everything(setup: dict[str, Any]) -> None:
    first: list[str] = []
    results = run(setup, first)
    out = setup["out"]
    for name in ("results.json", "report.html", "summary.md"):
        assert (out / name).is_file()
    saved = json.loads((out / "results.json").read_text())
    assert [m["name"] for m in saved["methods"]] == ["vector-diffmean", "lora-split"]
    lora = saved["methods"][1]
    assert lora["grid"] == [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
    assert len(lora["means"]["test"]) == 7 and saved["data"]["n_test"] == 4
    assert "accuracy_m0" in lora["eval"]
    for m in ("vector-diffmean", "lora-split"):
        d = out / "methods" / m
        for stage in ("delta", "sweep_train", "sweep_test", "fit", "eval"):
            assert (d / stage / "stage.json").is_file(), (m, stage)
    html = (out / "report.html").read_text()
    assert html.count("<tr data-method=") == 2
    second: list[str] = []
    again = run(setup, second)
    skipped = [line.strip().split(":")[0] for line in second if "done before" in line]
    assert skipped == ["train", "sweep train", "sweep test", "fit"] * 2
    assert [m.evaluation.to_dict() for m in again.methods] == [
        m.evaluation.to_dict() for m in results.methods
    ]


def test_changing_one_method_reruns_only_that_method(setup: dict[str, Any]) -> None:
    run(setup)
    exp = setup["exp"]
    lora = exp.methods[1]
    changed = exp.replace(
        methods=(exp.methods[0], type(lora)(**{**lora.__dict__, "train": {"lr": 0.01}}))
    )
    log: list[str] = []
    run(setup, log, changed)
    text = "\n".join(log)
    assert [line for line in log if line.startswith("  train: done before")] == log[2:3]
    assert "[2/2] lora-split\n  train: " in text and "lora-split\n  train: done" not in text


def test_an_interrupted_run_resumes(setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    real = runner_module.sweep
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if (
            calls["n"] == 4
        ):  # the second method's first sweep (after train, test and eval of the first)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner_module, "sweep", flaky)
    with pytest.raises(KeyboardInterrupt):
        run(setup)
    monkeypatch.setattr(runner_module, "sweep", real)
    log: list[str] = []
    run(setup, log)
    text = "\n".join(log)
    assert "[1/2] vector-diffmean\n  train: done before" in text
    assert "  sweep train: done before\n  sweep test: done before" in text  # method 1
    assert "[2/2] lora-split\n  train: done before" in text  # trained before the interrupt
    assert (setup["out"] / "report.html").is_file()


def test_a_run_resumed_after_its_fit_gives_the_same_numbers(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped between fit and eval: the resumed run reads the sweeps back (its replay cache
    starts cold) and must still evaluate to the same bits as the unbroken run. A plain run
    never joins a torchrun store."""

    def no_job(*_: Any) -> None:
        raise AssertionError("a single process joined a torchrun job")

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(runner_module.distributed, "join", no_job)
    unbroken = json.loads(json.dumps(run(setup).to_dict()))
    for m in ("vector-diffmean", "lora-split"):
        for stage in ("eval", "samples"):
            shutil.rmtree(setup["out"] / "methods" / m / stage, ignore_errors=True)
    resumed = json.loads(json.dumps(run(setup).to_dict()))
    assert _without_times(resumed["methods"]) == _without_times(unbroken["methods"])


def _without_times(value: Any) -> Any:
    """``value`` without its measurements of this process: times, and the peak memory (the
    process's high-water mark, which an earlier test in the same process may have set)."""
    if isinstance(value, dict):
        return {
            k: _without_times(v)
            for k, v in value.items()
            if "seconds" not in k and k != "peak_memory_mb"
        }
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def test_a_fresh_run_reads_no_file_back_and_a_rerun_reads_the_skipped_stages(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = pd.read_parquet
    read: list[str] = []

    def refuse(path: Any, *args: Any, **kwargs: Any) -> Any:
        read.append(str(path))
        raise AssertionError(f"{path} read back in the run that wrote it")

    monkeypatch.setattr(pd, "read_parquet", refuse)
    first = run(setup)
    assert read == []
    # a refused read inside the fit would show as a failed fit, not as an exception
    assert [m.fit.ok for m in first.methods] == [True, True]
    assert all(m.fit.chosen_m is not None for m in first.methods)

    out = setup["out"]

    def counting(path: Any, *args: Any, **kwargs: Any) -> Any:
        read.append(Path(path).relative_to(out).as_posix())
        return real(path, *args, **kwargs)

    monkeypatch.setattr(pd, "read_parquet", counting)
    log: list[str] = []
    again = run(setup, log)
    assert sum("done before" in line for line in log) == 8  # every stage skipped
    assert sorted(read) == sorted(
        f"methods/{m}/sweep_{split}/{name}"
        for m in ("vector-diffmean", "lora-split")
        for split in ("train", "test")
        for name in ("sweep.parquet", "means.parquet")
    )
    # what was read back equals what was computed, and the JSON too
    assert _without_times(again.to_dict()) == _without_times(first.to_dict())
    for fresh, loaded in zip(first.methods, again.methods, strict=True):
        assert loaded.fit.choice == fresh.fit.choice
        assert loaded.fit.r2() == fresh.fit.r2()
        assert fresh.fit.train is not None and loaded.fit.train is not None
        grid = np.asarray(fresh.grid)
        for curve in ("preference", "utility"):
            np.testing.assert_array_equal(
                getattr(loaded.fit.train, curve).predict(grid),
                getattr(fresh.fit.train, curve).predict(grid),
            )
        for split in ("train", "test"):
            pd.testing.assert_frame_equal(loaded.means[split], fresh.means[split])
        assert FitOutcome.load(fresh.directory / "fit").to_dict() == fresh.fit.to_dict()


def test_lenient_experiments_skip_long_pairs_and_list_them(setup: dict[str, Any]) -> None:
    from unisteer.errors import DataError

    exp = setup["exp"]
    with pytest.raises(DataError, match=r"pairs\.jsonl:\d+: pair '.*more than the limit of 14"):
        run(setup, exp=exp.replace(max_tokens=14))
    assert not (setup["out"] / "methods").exists()  # refused before any stage
    results = run(setup, exp=exp.replace(max_tokens=14, lenient=True))
    skipped = results.data.skipped
    assert skipped and all("more than the limit of 14; skipped" in s for s in skipped)
    saved = json.loads((setup["out"] / "results.json").read_text())
    assert saved["data"]["skipped"] == list(skipped)
    assert f"Skipped {len(skipped)} rows" in (setup["out"] / "summary.md").read_text()
    assert results.data.n_train + results.data.n_test + len(skipped) == 14
    assert results.data.n_train > 0 and results.data.n_test > 0


def test_an_output_changed_under_an_intact_record_reruns_its_stage(setup: dict[str, Any]) -> None:
    """The issue's poisoned fit: a stage whose ``stage.json`` still matches but whose
    ``sweep.parquet`` another process rewrote is run again; the fit after it is kept only
    because the rerun wrote the same table back (its key holds the table's SHA-256)."""
    first = run(setup)
    table = setup["out"] / "methods" / "lora-split" / "sweep_train" / "sweep.parquet"
    frame = pd.read_parquet(table)
    frame["pref_odds"] = frame["pref_odds"] + 5.0
    frame.to_parquet(table)
    log: list[str] = []
    again = run(setup, log)
    text = "\n".join(log)
    assert re.search(r"\[2/2\] lora-split\n  train: done before \(\d+ s\)\n  sweep train: \d", text)
    assert "sweep train: done before" not in text.split("[2/2] lora-split")[1]
    assert "sweep test: done before\n  fit: done before" in text.split("[2/2] lora-split")[1]
    assert [_without_times(m.to_dict()) for m in again.methods] == [
        _without_times(m.to_dict()) for m in first.methods
    ]


def test_an_adaptive_sweep_records_its_added_points_and_the_test_sweep_keeps_the_coarse_grid(
    setup: dict[str, Any],
) -> None:
    exp = setup["exp"].replace(adaptive=True, refine_rounds=2, max_util_drop=0.02)
    results = run(setup, exp=exp)
    out = setup["out"]
    n_added = 0
    for m in results.methods:
        d = out / "methods" / m.name
        info = json.loads((d / "sweep_train" / "stage.json").read_text())["info"]
        table = pd.read_parquet(d / "sweep_train" / "sweep.parquet")
        added = info["added"]
        n_added += len(added)
        assert {a["m"] for a in added} == set(table.loc[table["added"] > 0, "m"])
        assert set(table.loc[table["added"] == 0, "reason"]) == {"coarse grid"}
        assert all(a["reason"] and a["round"] in (1, 2) and a["tolerance"] > 0 for a in added)
        test = pd.read_parquet(d / "sweep_test" / "sweep.parquet")
        assert sorted(set(table["m"])) == m.grid
        coarse = set(table.loc[table["added"] == 0, "m"])
        assert set(test["m"]) == coarse and len(coarse) == exp.sweep_points
        means = pd.read_parquet(d / "sweep_train" / "means.parquet")
        assert list(means["m"]) == sorted(means["m"]) and "reason" in means.columns
    assert n_added > 0
    log: list[str] = []
    run(setup, log, exp)  # the adaptive stage is cached like any other
    assert sum("sweep train: done before" in line for line in log) == 2


def test_a_budget_level_refits_without_resweeping_and_keeps_the_bound(
    setup: dict[str, Any],
) -> None:
    budget = 0.05
    point = run(setup, exp=setup["exp"].replace(max_util_drop=budget))
    log: list[str] = []
    safe = run(setup, log, setup["exp"].replace(max_util_drop=budget, budget_level=0.9))
    text = "\n".join(log)
    assert "sweep train: done before" in text and "fit: done before" not in text
    for before, after in zip(point.methods, safe.methods, strict=True):
        c0, c1 = before.fit.choice, after.fit.choice
        assert c0 is not None and c1 is not None
        assert c0.budget_level == 0.5 and c1.budget_level == 0.9
        table = pd.read_parquet(after.directory / "sweep_train" / "sweep.parquet")
        margin = drop_margin(table, 0.9)
        assert c1.util_drop_bound == pytest.approx(c1.util_drop + float(margin(c1.m)))
        assert c1.util_drop_bound <= budget + 1e-9 and abs(c1.m) <= abs(c0.m) + 1e-12
    summary = (setup["out"] / "summary.md").read_text()
    assert "kept with 90% one-sided confidence over pairs" in summary
    assert "drop bound kept ≤ budget" in summary
