"""[data] transfer: each chosen m is also measured on pairs of another source (here: pairs
whose queries are conversations), and the report puts both measured gains side by side."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest

from unisteer.data import PairSet, PolarityPair
from unisteer.experiment import ExperimentError, parse_experiment
from unisteer.report.html import summary_markdown, transfer_rows
from unisteer.report.results import PAIR_GAINS, ExperimentResults

from tiny_pairs import run_tiny, split_pairs_file
from tiny_tokenizers import WORDS

EXPERIMENT = """\
name = "tiny-transfer"

[data]
source = "{data}"
train_pairs = 8
test_pairs = 4
sweep_train_pairs = 4
transfer = "{transfer}"
transfer_pairs = 5

[model]
layer = 1

[sweep]
points = 7

[fit]
starts = 4

[report]
samples = 1

[[method]]
kind = "vector"
objective = "diffmean"
"""


def conversations(n: int, seed: int = 1) -> list[PolarityPair]:
    rng = random.Random(seed)
    w = [x for x in WORDS if x.strip()]

    def text(k: int) -> str:
        return " ".join(rng.choices(w, k=k))

    return [
        PolarityPair(
            [  # type: ignore[arg-type]
                {"role": "user", "content": text(3)},
                {"role": "assistant", "content": text(4)},
                {"role": "user", "content": text(2)},
            ],
            text(3),
            text(3),
            id=f"c{i}",
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentResults, Path]:
    tmp = tmp_path_factory.mktemp("transfer")
    transfer = PairSet(conversations(8)).to_jsonl(tmp / "talk.jsonl")
    return run_tiny(EXPERIMENT.format(data=split_pairs_file(tmp), transfer=transfer), tmp)


def test_each_chosen_m_is_measured_on_the_transfer_pairs(
    finished: tuple[ExperimentResults, Path],
) -> None:
    results, out = finished
    (method,) = results.methods
    tr, ev = method.transfer, method.evaluation
    assert tr is not None and results.experiment.transfer is not None
    assert tr.chosen_m == ev.chosen_m == method.fit.chosen_m
    per = pd.read_parquet(method.directory / "transfer" / PAIR_GAINS)
    assert len(per) == 5 and set(per["pair_id"]) <= {f"c{i}" for i in range(8)}
    assert tr.pref_gain == pytest.approx(per["pref_gain"].mean())
    (row,) = transfer_rows(results)
    assert row["transfer_pref_gain"] == tr.pref_gain and row["test_pref_gain"] == ev.pref_gain
    assert "## Transfer to" in summary_markdown(results)
    assert "<table id='transfer'>" in (out / "report.html").read_text()
    loaded = ExperimentResults.load(out)
    assert loaded.to_dict() == results.to_dict() and loaded.methods[0].transfer == tr


def test_transfer_pairs_without_a_transfer_source_is_an_error(tmp_path: Path) -> None:
    text = EXPERIMENT.format(data="default:pirate", transfer="x").replace('transfer = "x"\n', "")
    with pytest.raises(ExperimentError, match=r"data\.transfer_pairs: needs \[data\] transfer"):
        parse_experiment(text, "t.toml")
    missing = EXPERIMENT.format(data="default:pirate", transfer="no/such.jsonl")
    with pytest.raises(ExperimentError, match=r"t\.toml:8: data\.transfer: no such file"):
        parse_experiment(missing, str(tmp_path / "t.toml"))
