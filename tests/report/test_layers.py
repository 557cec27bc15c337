"""The layer question: one experiment over several blocks gives a per-block table and plot."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from unisteer.core.sites import find_blocks
from unisteer.report.html import summary_markdown
from unisteer.report.layers import layer_rows, method_family
from unisteer.report.results import ExperimentResults

from tiny_models import tiny_model
from tiny_pairs import run_tiny, split_pairs_file

EXPERIMENT = """\
name = "tiny-layers"

[data]
source = "{data}"
train_pairs = 8
test_pairs = 4
sweep_train_pairs = 4

[sweep]
points = 7

[fit]
starts = 4

[report]
samples = 0

[[method]]
kind = "vector"
objective = "diffmean"
layers = "all"
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentResults, Path, int]:
    tmp = tmp_path_factory.mktemp("layers")
    results, out = run_tiny(EXPERIMENT.format(data=split_pairs_file(tmp)), tmp)
    return results, out, len(find_blocks(tiny_model("llama"))[1])


def test_a_layer_rule_runs_one_method_per_block(
    finished: tuple[ExperimentResults, Path, int],
) -> None:
    results, _, n_blocks = finished
    assert n_blocks >= 2
    assert [m.name for m in results.methods] == [f"vector-diffmean-L{i}" for i in range(n_blocks)]
    assert [m.layer for m in results.methods] == list(range(n_blocks))
    # each delta sits at its own block (not the experiment's middle one)
    assert len({m.site for m in results.methods}) == n_blocks
    assert {method_family(m) for m in results.methods} == {"vector-diffmean"}


def test_the_layer_table_marks_the_block_with_the_largest_fitted_gain(
    finished: tuple[ExperimentResults, Path, int],
) -> None:
    results, out, n_blocks = finished
    rows = layer_rows(results)
    assert [r["layer"] for r in rows] == list(range(n_blocks))
    assert json.loads((out / "layers.json").read_text()) == json.loads(json.dumps(rows))
    gains = {r["layer"]: r["fit_pref_gain"] for r in rows if r["fit_pref_gain"] is not None}
    chosen = [r["layer"] for r in rows if r["chosen_layer"]]
    assert gains and chosen == [max(gains, key=lambda k: gains[k])]
    for r, m in zip(rows, results.methods, strict=True):
        assert r["test_pref_gain"] == m.evaluation.pref_gain
        assert r["chosen_m"] == (m.fit.choice.m if m.fit.choice is not None else None)
    assert (out / "layers.png").stat().st_size > 1000
    html = (out / "report.html").read_text()
    assert "<table id='layers'>" in html and "Which layer" in html
    summary = summary_markdown(results)
    assert "## Which layer" in summary and f"{n_blocks} blocks (" in summary


def test_one_block_per_method_gives_no_layer_table(
    finished: tuple[ExperimentResults, Path, int],
) -> None:
    results, _, _ = finished
    one = dataclasses.replace(results, methods=results.methods[:1])
    assert layer_rows(one) == []
    assert "Which layer" not in summary_markdown(one)
