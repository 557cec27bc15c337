"""Experiments over several concepts: parsing, the split of work across ranks, the
aggregate over concepts, and a two-concept run that equals its concepts run one by one."""

from __future__ import annotations

import datetime
import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from unisteer.experiment import parse_experiment, run_experiment
from unisteer.experiment.concepts import concepts_of
from unisteer.experiment.config import ExperimentError
from unisteer.experiment.distributed import Job, World, partition, world_from_env
from unisteer.report.concepts import ConceptsResults, mean_interval, method_table
from unisteer.report.results import ExperimentResults

from tiny_models import tiny_model
from tiny_pairs import split_pairs_file
from tiny_tokenizers import CHATML, word_tokenizer

TWO = """\
name = "two"

[data]
source = ["{a}", "{b}"]
train_pairs = 6
test_pairs = 4
sweep_train_pairs = 3

[model]
layer = 1

[train]
epochs = 1
batch_size = 4

[sweep]
points = 7

[fit]
starts = 2

[report]
samples = 1
tokens = 4

[[method]]
kind = "vector"
objective = "diffmean"

[[method]]
kind = "lora"
objective = "sft"
grid = "-3:3:7"
"""


def two_sources(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "alpha").mkdir()
    (tmp_path / "beta").mkdir()
    a = split_pairs_file(tmp_path / "alpha", seed=4)
    b = split_pairs_file(tmp_path / "beta", seed=9)
    return a.rename(tmp_path / "alpha.jsonl"), b.rename(tmp_path / "beta.jsonl")


def test_a_list_of_sources_is_one_concept_each(tmp_path: Path) -> None:
    a, b = two_sources(tmp_path)
    exp = parse_experiment(TWO.format(a=a, b=b), str(tmp_path / "two.toml"))
    assert exp.sources == (str(a), str(b)) and exp.data == str(a)
    assert [c.name for c in concepts_of(exp)] == ["alpha", "beta"]
    mixed = parse_experiment(TWO.format(a=a, b="default:pirate"))
    assert [c.name for c in concepts_of(mixed)] == ["alpha", "pirate"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("source = []", "non-empty list"),
        ("source = [1, 2]", "non-empty list"),
        ('source = ["default", "default"]', "listed twice"),
        ('source = "default"\nconcepts = [1]', 'needs format = "axbench"'),
        ('source = "default"\nformat = "axbench"\nconcepts = [1, 1]', "distinct concept ids"),
        ('source = ["default", "nowhere.jsonl"]', "no such file"),
    ],
)
def test_bad_sources_name_the_key_and_line(tmp_path: Path, data: str, message: str) -> None:
    text = f'name = "x"\n\n[data]\n{data}\n\n[[method]]\nkind = "vector"\nobjective = "diffmean"\n'
    with pytest.raises(ExperimentError, match=message) as e:
        parse_experiment(text, str(tmp_path / "x.toml"))
    where = re.escape(str(tmp_path / "x.toml"))
    assert re.match(rf"{where}:[456]: data\.(source|concepts): ", str(e.value)), str(e.value)


def test_every_concept_of_an_axbench_file(tmp_path: Path) -> None:
    rows = [
        {"input": f"q{i}", "output": f"a{i}", "output_concept": f"c{cid}", "category": cat,
         "concept_id": cid}
        for i, (cid, cat) in enumerate([(3, "positive"), (1, "positive"), (-1, "negative"),
                                        (3, "positive"), (7, "positive")])
    ]  # fmt: skip
    path = tmp_path / "train_data.parquet"
    pd.DataFrame(rows).to_parquet(path)
    head = f'name = "ax"\n[data]\nsource = "{path}"\nformat = "axbench"\n'
    tail = '[[method]]\nkind = "vector"\nobjective = "diffmean"\n'
    every = parse_experiment(head + tail)
    assert [(c.name, c.concept_id) for c in concepts_of(every)] == [
        ("train_data-1", 1), ("train_data-3", 3), ("train_data-7", 7)
    ]  # fmt: skip
    chosen = parse_experiment(head + "concepts = [7, 3]\n" + tail)
    assert [c.concept_id for c in concepts_of(chosen)] == [7, 3]
    with pytest.raises(ExperimentError, match=r"concepts \[5\] are not in"):
        concepts_of(parse_experiment(head + "concepts = [5]\n" + tail))


@given(st.integers(0, 40), st.integers(1, 9))
def test_partition_splits_every_unit_once_in_contiguous_blocks(n: int, size: int) -> None:
    units = list(range(n))
    shares = [partition(units, r, size) for r in range(size)]
    assert [u for share in shares for u in share] == units
    lengths = [len(s) for s in shares]
    assert max(lengths) - min(lengths) <= 1


def test_world_comes_from_torchruns_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert world_from_env() is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert world_from_env() is None
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    world = world_from_env()
    assert world is not None and (world.rank, world.size, world.is_main) == (2, 4, False)


def test_ranks_meet_in_one_store_and_a_killed_rounds_keys_do_no_harm() -> None:
    """Job.agree and Job.barrier on one in-memory c10d store, two ranks as threads; a second
    round on the same store (what torchrun keeps across a restart) passes on the old keys."""
    import threading

    from torch.distributed import HashStore

    from unisteer.errors import UsageError

    store = HashStore()
    store.set_timeout(datetime.timedelta(seconds=20))
    errors: dict[int, str] = {}

    def rank(r: int, problem: str) -> None:
        job = Job(World(r, 2), store)
        try:
            job.agree(not problem, problem)
            job.barrier("written")
        except UsageError as e:
            errors[r] = str(e)

    def round_(problems: tuple[str, str]) -> None:
        threads = [threading.Thread(target=rank, args=(r, p)) for r, p in enumerate(problems)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)

    round_(("", ""))
    assert errors == {}
    round_(("", ""))  # the keys of the first round are still in the store
    assert errors == {}
    fresh = HashStore()
    fresh.set_timeout(datetime.timedelta(seconds=20))
    store = fresh
    round_(("", "rank 1 cannot read its data"))
    assert errors == {0: "rank 1 cannot read its data", 1: "rank 1 cannot read its data"}


def test_mean_interval_is_students_t() -> None:
    values = [0.3, 1.1, -0.4, 2.0]
    mean, low, high = mean_interval(values)
    sd = pd.Series(values).std(ddof=1)
    half = stats.t.ppf(0.975, 3) * sd / math.sqrt(4)
    assert mean == pytest.approx(0.75) and (low, high) == pytest.approx((0.75 - half, 0.75 + half))
    assert math.isnan(mean_interval([1.0])[1]) and math.isnan(mean_interval([])[0])


def test_method_means_skip_missing_values_and_count_them() -> None:
    table = pd.DataFrame(
        {"concept": ["a", "b", "c"], "method": ["m"] * 3, "kind": ["vector"] * 3,
         "objective": ["sft"] * 3, "chosen_m": [1.0, float("nan"), 3.0]}
    )  # fmt: skip
    for col in ("pref_gain", "util_drop", "accuracy", "accuracy_m0", "r2_preference", "r2_utility"):
        table[col] = [0.5, 0.5, 0.5]
    row = method_table(table).iloc[0]
    assert row["concepts"] == 3 and row["chosen_m_n"] == 2 and row["chosen_m"] == 2.0
    assert row["pref_gain_n"] == 3 and row["pref_gain_ci_low"] == pytest.approx(0.5)


def _numbers(value: Any, *roots: Path) -> Any:
    """``value`` without what differs between runs of the same work: times, peak memory,
    and the output folders inside paths and messages."""
    if isinstance(value, dict):
        return {
            k: _numbers(v, *roots)
            for k, v in value.items()
            if "seconds" not in k and k not in ("peak_memory_mb", "name", "source")
        }
    if isinstance(value, list):
        return [_numbers(v, *roots) for v in value]
    if isinstance(value, str):
        for root in roots:
            value = value.replace(str(root), "<out>")
    return value


def test_two_concepts_run_as_each_alone_and_aggregate(tmp_path: Path) -> None:
    a, b = two_sources(tmp_path)
    exp = parse_experiment(TWO.format(a=a, b=b), str(tmp_path / "two.toml"))
    model, tok = tiny_model("llama"), word_tokenizer(chat_template=CHATML)
    kwargs: dict[str, Any] = {"model": model, "tokenizer": tok, "progress": False, "log": print}
    torch.manual_seed(0)
    both = run_experiment(exp, out=tmp_path / "both", **kwargs)
    assert isinstance(both, ConceptsResults)
    out = tmp_path / "both"
    for name in (
        "results.json",
        "report.html",
        "summary.md",
        "concepts.parquet",
        "methods.parquet",
    ):
        assert (out / name).is_file(), name
    for concept in ("alpha", "beta"):
        assert (out / "concepts" / concept / "results.json").is_file()
        assert (out / "concepts" / concept / "report.html").is_file()
    per_concept = pd.read_parquet(out / "concepts.parquet")
    assert list(per_concept[["concept", "method"]].itertuples(index=False, name=None)) == [
        ("alpha", "vector-diffmean"), ("alpha", "lora-sft"),
        ("beta", "vector-diffmean"), ("beta", "lora-sft"),
    ]  # fmt: skip
    per_method = pd.read_parquet(out / "methods.parquet")
    assert list(per_method["method"]) == ["vector-diffmean", "lora-sft"]
    assert (per_method["concepts"] == 2).all()
    saved = json.loads((out / "results.json").read_text())
    assert [c["name"] for c in saved["concepts"]] == ["alpha", "beta"]
    summary = (out / "summary.md").read_text()
    assert "2 concepts × 2 methods" in summary and "alpha" in summary
    # each concept's numbers are those of the concept run on its own
    alone = run_experiment(
        exp.replace(data=str(b), sources=()), out=tmp_path / "beta-alone", **kwargs
    )
    assert isinstance(alone, ExperimentResults)
    assert _numbers(
        saved["concepts"][1]["results"]["methods"], out / "concepts" / "beta"
    ) == _numbers(alone.to_dict()["methods"], tmp_path / "beta-alone")
    beta = per_concept[per_concept["concept"] == "beta"]
    assert list(beta["pref_gain"].fillna(-99)) == [
        -99 if m.evaluation.pref_gain is None else m.evaluation.pref_gain for m in alone.methods
    ]
    mean = per_method.iloc[0]["accuracy_m0"]
    assert mean == pytest.approx(per_concept[per_concept["method"] == "vector-diffmean"][
        "accuracy_m0"].mean())  # fmt: skip
    # a rerun skips every stage of every concept
    lines: list[str] = []
    run_experiment(exp, out=out, **{**kwargs, "log": lines.append})
    assert sum(line.strip().startswith("train: done before") for line in lines) == 4
