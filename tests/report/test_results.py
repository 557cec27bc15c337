"""The typed results of an experiment: ``to_dict()`` is the JSON ``results.json`` has always
held, and results read back from disk give the same JSON and the same report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from unisteer.report.html import method_row, report_html, summary_markdown
from unisteer.report.results import EvalResult, ExperimentResults, FitOutcome, MethodResult

from tiny_pairs import run_tiny, split_pairs_file

EXPERIMENT = """\
name = "tiny"

[data]
source = "{data}"
train_pairs = 8
test_pairs = 4
sweep_train_pairs = 4

[model]
layer = 1

[sweep]
points = 7

[fit]
starts = 4

[[method]]
kind = "vector"
objective = "diffmean"
"""

# The keys of results.json, in order, as written before the results were typed (and since:
# experiment.budget_level, the budget's confidence level of unisteer.fit.margin).
TOP = ["experiment", "data", "model", "versions", "methods", "timings", "peak_memory_mb"]
SECTIONS = {
    "experiment": [
        "name", "source", "model", "layer", "data", "seed", "train", "sweep_points",
        "reduction", "positions", "max_util_drop", "fit_starts", "budget_level",
    ],
    "data": ["source", "n_train", "n_sweep_train", "n_test", "skipped"],
    "model": ["name", "fingerprint"],
    "versions": ["unisteer", "torch", "transformers", "python", "platform", "cpu_threads"],
    "timings": ["model_load_seconds", "methods_seconds", "wall_seconds"],
}  # fmt: skip
METHOD = [
    "name", "kind", "objective", "preset", "site", "layer", "n_parameters", "hparams",
    "training", "grid", "means", "fit", "eval", "samples", "dir", "seconds",
]  # fmt: skip
TRAINING = ["steps", "first_loss", "final_loss", "validation", "unit"]
MEANS_ROW = [
    "m", "n", "pref_odds", "pref_odds_sem", "util_odds", "util_odds_sem", "n_out_of_domain",
    "loss_pos", "loss_neg",
]  # fmt: skip
FITS = [
    "format_version", "model", "max_util_drop", "train", "choice", "r2", "test",
    "choice_on_test", "plots",
]  # fmt: skip
EVAL = [
    "accuracy_m0", "pref_m0", "util_m0", "chosen_m", "accuracy", "pref_gain", "util_drop",
    "n_out_of_domain", "pref_gain_ci", "util_drop_ci",
]  # fmt: skip


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentResults, Path]:
    tmp = tmp_path_factory.mktemp("results")
    return run_tiny(EXPERIMENT.format(data=split_pairs_file(tmp)), tmp)


def test_to_dict_is_what_results_json_holds_in_its_old_layout(
    finished: tuple[ExperimentResults, Path],
) -> None:
    results, out = finished
    saved = json.loads((out / "results.json").read_text())
    assert results.to_dict() == saved
    assert list(saved) == TOP
    for section, keys in SECTIONS.items():
        assert list(saved[section]) == keys, section
    assert list(saved["timings"]["methods_seconds"]) == ["vector-diffmean"]
    (method,) = saved["methods"]
    assert list(method) == METHOD
    assert list(method["training"]) == TRAINING
    assert list(method["means"]) == ["train", "test"]
    assert [list(row) for row in method["means"]["test"]] == [MEANS_ROW] * 7
    assert list(method["fit"]) == ["ok", "fits"] and method["fit"]["ok"] is True
    assert list(method["fit"]["fits"]) == FITS
    assert list(method["eval"]) == EVAL
    # results.json repeats the fit stage's fits.json and result.json
    fit_dir = Path(method["dir"]) / "fit"
    assert method["fit"]["fits"] == json.loads((fit_dir / "fits.json").read_text())
    assert method["fit"] == json.loads((fit_dir / "result.json").read_text())
    assert method["eval"] == json.loads((Path(method["dir"]) / "eval" / "eval.json").read_text())


def test_results_read_back_give_the_same_json_and_report(
    finished: tuple[ExperimentResults, Path],
) -> None:
    results, out = finished
    loaded = ExperimentResults.load(out)
    assert loaded.to_dict() == results.to_dict()
    assert summary_markdown(loaded) == summary_markdown(results)
    assert report_html(loaded, out) == report_html(results, out)
    fresh, back = results.methods[0], loaded.methods[0]
    assert back.fit.choice == fresh.fit.choice and back.fit.r2() == fresh.fit.r2()
    assert method_row(back) == method_row(fresh)


def test_the_typed_fit_is_the_one_fits_json_records(
    finished: tuple[ExperimentResults, Path],
) -> None:
    results, _ = finished
    method = results.method("vector-diffmean")
    fit = method.fit
    assert fit.ok and fit.train is not None and fit.test is not None
    assert fit.choice is not None and fit.generalization is not None
    record: dict[str, Any] = fit.to_dict()["fits"]
    assert record["choice"] == fit.choice.to_dict()
    assert record["r2"] == fit.r2() == fit.generalization.to_dict()
    assert record["train"]["fits"] == fit.train.to_dict()
    assert record["test"]["fits"] == fit.test.to_dict()
    assert fit.chosen_m == fit.choice.m == method.evaluation.chosen_m
    row = method_row(method)
    assert row["chosen_m"] == fit.choice.m and "fit_error" not in row
    assert row["preference_r2_train_to_test"] == record["r2"]["preference"]["train_to_test"]
    with pytest.raises(KeyError):
        results.method("nope")


def test_a_failed_fit_and_an_evaluation_without_a_chosen_m(
    finished: tuple[ExperimentResults, Path],
) -> None:
    results, _ = finished
    failed = FitOutcome.failed("train sweep: flat")
    assert failed.to_dict() == {"ok": False, "error": "train sweep: flat"}
    assert FitOutcome.from_dict(failed.to_dict()).error == "train sweep: flat"
    assert not failed.ok and failed.chosen_m is None and failed.r2() == {}
    at_zero = EvalResult(accuracy_m0=0.5, pref_m0=-1.0, util_m0=float("nan"))
    assert at_zero.to_dict() == {"accuracy_m0": 0.5, "pref_m0": -1.0, "util_m0": None}
    assert EvalResult.from_dict(at_zero.to_dict()).chosen_m is None
    data = results.methods[0].to_dict()
    data.update(fit=failed.to_dict(), eval=at_zero.to_dict())
    method = MethodResult.from_dict(data)
    assert method.to_dict() == data
    row = method_row(method)
    assert row["fit_error"] == "train sweep: flat" and "chosen_m" not in row
    assert row["accuracy_m0"] == 0.5 and row["accuracy"] is None


def test_a_failed_fit_is_noted_below_the_table_not_inside_it(
    finished: tuple[ExperimentResults, Path],
) -> None:
    results, _ = finished
    data = results.methods[0].to_dict()
    data.update(name="broken", fit=FitOutcome.failed("train sweep: flat").to_dict())
    broken = MethodResult.from_dict(data)
    both = dataclasses.replace(results, methods=[broken, results.methods[0]])
    lines = summary_markdown(both).splitlines()
    table = [i for i, line in enumerate(lines) if line.startswith("|")]
    assert len(table) == 4 and table == list(range(table[0], table[0] + 4))  # one block
    note = lines.index("`broken`: fit failed: train sweep: flat")
    assert note > table[-1]
