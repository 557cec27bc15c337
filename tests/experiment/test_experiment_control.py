"""``[control]`` in experiment files: validated with the key and line named; per method a
kappa sweep on the test pairs, an m_t trace, the report's section; cached like every stage."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from unisteer.control import ControlSpec
from unisteer.experiment import parse_experiment, run_experiment
from unisteer.experiment.config import ExperimentError
from unisteer.report.results import ExperimentResults

from tiny_models import tiny_model
from tiny_pairs import split_pairs_file
from tiny_tokenizers import CHATML, word_tokenizer

EXPERIMENT = """\
name = "tiny-control"

[data]
source = "{data}"
train_pairs = 6
test_pairs = 3
sweep_train_pairs = 3

[model]
layer = 1

[sweep]
points = 7

[fit]
starts = 2

[report]
samples = 1
tokens = 5

[control]
{control}

[[method]]
kind = "vector"
objective = "diffmean"
"""


def experiment(tmp_path: Path, control: str) -> Any:
    text = EXPERIMENT.format(data=split_pairs_file(tmp_path), control=control)
    return parse_experiment(text, str(tmp_path / "tiny.toml"))


def test_control_tables_are_checked_with_their_line(tmp_path: Path) -> None:
    exp = experiment(tmp_path, 'controller = "kl_budget"\nkappas = [0.0, 0.5, inf]\nk = 3')
    assert exp.control == ControlSpec("kl_budget", k=3)
    assert exp.kappas == (0.0, 0.5, math.inf) and exp.sample_kappa is None
    for control, says in [
        ('controller = "pid"\nkappas = [1.0]', "control.controller: expected kl_budget"),
        ('controller = "fixed"\nkappas = [1.0]', "control.controller: expected kl_budget"),
        ("m_max = 2.0", "missing key 'kappas'"),
        ("kappas = []", "control.kappas: expected a non-empty list"),
        ("kappas = [-1.0]", "control.kappas: expected a non-empty list"),
        ("kappas = [1.0]\nk = 1", "control.k: k must be at least 2"),
        ("kappas = [1.0]\nm_max = 0.0", "control.m_max: m_max must be a finite number"),
        ("kappas = [1.0]\nkappa = 1.0", "control.kappa: unknown key"),
        ("kappas = [1.0]\nsample_kappa = -1.0", "control.sample_kappa: must be >= 0"),
    ]:
        with pytest.raises(ExperimentError, match=says) as err:
            experiment(tmp_path, control)
        assert "tiny.toml:" in str(err.value)  # the line is named


def test_a_controller_per_method_with_its_trace_and_report(tmp_path: Path) -> None:
    exp = experiment(tmp_path, "kappas = [0.0, 0.5, inf]\nk = 3\nsample_kappa = inf")
    model, tok = tiny_model("llama"), word_tokenizer(chat_template=CHATML)
    log: list[str] = []
    kw: dict[str, Any] = {"out": tmp_path / "out", "model": model, "tokenizer": tok,
                          "progress": False, "log": log.append}  # fmt: skip
    results = run_experiment(exp, **kw)
    method = results.methods[0]
    control = method.control
    assert control is not None
    m_max = max(method.grid)
    assert control.controller == {"name": "kl_budget", "m_max": m_max, "k": 3}
    means = control.means.set_index("kappa")
    assert list(means.index) == [0.0, 0.5, math.inf]
    # kappa = 0 is m = 0 on every token (no gain, no drop); kappa = inf is fixed m_max.
    assert means.loc[0.0, "mean_m"] == 0.0
    assert means.loc[0.0, "pref_gain"] == 0.0 and means.loc[0.0, "util_drop"] == 0.0
    assert means.loc[math.inf, "mean_m"] == pytest.approx(m_max)
    trace = control.trace
    assert trace is not None and trace.kappa == math.inf
    assert len(trace.m) == len(trace.tokens) == len(trace.kl) and set(trace.m) == {m_max}
    mdir = tmp_path / "out" / "methods" / method.name / "control"
    assert (mdir / "control.png").is_file()
    table = pd.read_parquet(mdir / "kappa_sweep.parquet")
    assert len(table) == 3 * 3  # pairs x kappas
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Adaptive multiplier: kl_budget" in page and "controller and m_t trace'" in page
    assert "class='trace'" in page
    # results.json round-trips the controller (inf included) ...
    saved = ExperimentResults.load(tmp_path / "out" / "results.json").methods[0].control
    assert saved is not None and list(saved.means["kappa"]) == [0.0, 0.5, math.inf]
    assert saved.trace == trace
    raw = json.loads((tmp_path / "out" / "results.json").read_text())
    assert raw["methods"][0]["control"]["means"][2]["kappa"] == "inf"
    # ... and a rerun reads the stage back; another kappa list reruns it.
    before = (mdir / "stage.json").read_text()
    again = run_experiment(exp, **kw)
    assert (mdir / "stage.json").read_text() == before
    assert again.methods[0].control is not None
    other = experiment(tmp_path, "kappas = [0.0, 0.2]\nk = 3")
    changed = run_experiment(other, **kw).methods[0].control
    assert changed is not None and list(changed.means["kappa"]) == [0.0, 0.2]
    assert changed.trace is not None and changed.trace.kappa == 0.2  # the middle by default


def test_static_kl_in_an_experiment(tmp_path: Path) -> None:
    exp = experiment(tmp_path, 'controller = "static_kl"\nkappas = [0.0, inf]\npoints = 3')
    results = run_experiment(
        exp, out=tmp_path / "out", model=tiny_model("llama"),
        tokenizer=word_tokenizer(chat_template=CHATML), progress=False, log=lambda _: None,
    )  # fmt: skip
    control = results.methods[0].control
    assert control is not None and control.controller["name"] == "static_kl"
    means = control.means.set_index("kappa")
    assert means.loc[0.0, "mean_m"] == 0.0
    assert means.loc[math.inf, "mean_m"] == pytest.approx(max(results.methods[0].grid))
