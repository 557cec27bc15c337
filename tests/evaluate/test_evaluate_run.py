"""Running the AxBench evaluation end to end on a tiny model: storage, resume, rescoring,
proxy naming, and the accuracy evaluation."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

import unisteer
from tiny_axbench import INSTRUCTIONS, make_concept_dir
from unisteer.data.pairs import PolarityPair
from unisteer.errors import DataError
from unisteer.evaluate import (
    AxBenchSettings,
    Judge,
    ProxyJudge,
    eval_accuracy,
    eval_axbench,
    pair_accuracy,
    rescore,
)
from unisteer.evaluate.accuracy import accuracy_by_m
from unisteer.evaluate.axbench.concepts import resolve_concept
from unisteer.evaluate.axbench.job import delta_dirs_by_concept
from unisteer.evaluate.axbench.store import EvalStore
from unisteer.evaluate.judges.prompts import Criterion
from unisteer.scoring.sweep import score_pairs

from conftest import make_delta
from tiny_models import tiny_model
from tiny_tokenizers import CHATML, word_tokenizer

SETTINGS = AxBenchSettings(max_new_tokens=4, seed=1)
FACTORS = [0.5, 2.0]


class HashJudge(Judge):
    """A deterministic fake judge: the score is a hash of (criterion, text)."""

    def __init__(self, name: str = "fake:hash", fail_after: int | None = None) -> None:
        super().__init__()
        self.name = name
        self.calls = 0
        self.fail_after = fail_after

    def rate(
        self, criterion: Criterion, concept: str, instruction: str, text: str
    ) -> tuple[int, str]:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("judge went away")
        digest = hashlib.sha256(f"{criterion}|{text}".encode()).digest()
        score = 1 + digest[0] % 2  # 1 or 2: HM is never zero, so factors differ
        return score, f"hash {digest[0]}"


class CountingModel:
    """Counts ``generate`` calls; optionally fails on the n-th."""

    def __init__(self, model: Any, fail_on: int | None = None) -> None:
        self.model = model
        self.calls = 0
        self.fail_on = fail_on

    def generate(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.fail_on is not None and self.calls == self.fail_on:
            raise KeyboardInterrupt
        return self.model.generate(**kwargs, min_new_tokens=2)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


@pytest.fixture(scope="module")
def concept_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_concept_dir(tmp_path_factory.mktemp("concepts"))


@pytest.fixture
def setup() -> tuple[Any, Any, dict[str, Any]]:
    model = tiny_model("llama")
    tok = word_tokenizer(chat_template=CHATML)
    deltas: dict[str, Any] = {
        "0": make_delta(model, "vector", layer=1, seed=0),
        "greetings": make_delta(model, "lora", layer=2, seed=1),
    }
    return model, tok, deltas


def run(model: Any, tok: Any, concept_dir: Path, deltas: Any, judge: Any, out: Path, **kw: Any):  # type: ignore[no-untyped-def]
    return eval_axbench(
        model, tok, concept_dir, deltas, judge, kw.pop("factors", FACTORS), out,
        instructions=INSTRUCTIONS, settings=SETTINGS, batch_size=4, progress=False, **kw,
    )  # fmt: skip


def test_eval_axbench_stores_resumes_and_reports(
    concept_dir: Path, setup: tuple[Any, Any, dict[str, Any]], tmp_path: Path
) -> None:
    model, tok, deltas = setup
    counting = CountingModel(model)
    judge = HashJudge()
    report = run(counting, tok, concept_dir, deltas, judge, tmp_path / "out")
    assert report is not None
    store = EvalStore(tmp_path / "out")
    gens = store.generations()
    assert len(gens) == 2 * 10 * 2  # concepts x instructions x factors
    assert set(gens["split"]) == {"select", "report"}
    assert {"text", "seed", "factor", "instruction", "delta_hash"} <= set(gens.columns)
    ratings = store.ratings(judge.name)
    assert len(ratings) == 40 * 3
    assert set(ratings["judge"]) == {"fake:hash"}
    assert {"score", "rationale", "criterion"} <= set(ratings.columns)
    assert judge.calls == 120
    # Report: one selected factor per concept; proxy-free names.
    assert set(report.selected["concept_id"]) == {0, 1}
    assert set(report.selected["factor"]) <= set(FACTORS)
    assert {"hm", "concept_score", "instruction_score", "fluency_score"} <= set(report.scores)
    assert report.files["summary"].is_file() and report.files["scores"].is_file()
    assert report.summary["n_concepts"].tolist() == [2]
    # Running again regenerates nothing and rates nothing.
    calls = counting.calls
    again_judge = HashJudge()
    again = run(counting, tok, concept_dir, deltas, again_judge, tmp_path / "out")
    assert counting.calls == calls and again_judge.calls == 0
    assert again is not None
    pd.testing.assert_frame_equal(again.selected, report.selected)


def test_interrupted_run_resumes_to_the_same_result(
    concept_dir: Path, setup: tuple[Any, Any, dict[str, Any]], tmp_path: Path
) -> None:
    model, tok, deltas = setup
    full = run(model, tok, concept_dir, deltas, HashJudge(), tmp_path / "full")
    assert full is not None
    # Interrupted in generation (the 6th generate call: during the second concept) ...
    with pytest.raises(KeyboardInterrupt):
        run(CountingModel(model, fail_on=6), tok, concept_dir, deltas, HashJudge(), tmp_path / "r")
    partial = EvalStore(tmp_path / "r").generations()
    assert 0 < len(partial) < 40
    # ... then in rating ...
    with pytest.raises(RuntimeError, match="went away"):
        run(model, tok, concept_dir, deltas, HashJudge(fail_after=30), tmp_path / "r")
    # ... then completed.
    counting = CountingModel(model)
    resumed = run(counting, tok, concept_dir, deltas, HashJudge(), tmp_path / "r")
    assert resumed is not None
    key = ["method", "concept_id", "input_id", "factor"]
    a = EvalStore(tmp_path / "full").generations().sort_values(key).reset_index(drop=True)
    b = EvalStore(tmp_path / "r").generations().sort_values(key).reset_index(drop=True)
    assert a["text"].tolist() == b["text"].tolist()  # seeded per row: same texts
    pd.testing.assert_frame_equal(full.selected, resumed.selected)


def test_rescoring_with_the_proxy_judge_never_generates(
    concept_dir: Path, setup: tuple[Any, Any, dict[str, Any]], tmp_path: Path
) -> None:
    model, tok, deltas = setup
    out = tmp_path / "out"
    assert run(model, tok, concept_dir, deltas, None, out) is None  # generate only
    gens = EvalStore(out).generations()
    assert len(gens) == 40
    proxy = ProxyJudge.fit(concept_dir, embeddings="tfidf")
    report = rescore(out, proxy, progress=False)
    assert report.prefix == "proxy_"
    assert {"proxy_hm", "proxy_concept_score", "proxy_judge"} <= set(report.scores.columns)
    assert "hm" not in report.scores.columns and "concept_score" not in report.scores.columns
    assert set(report.scores["proxy_judge"]) == {proxy.name}
    assert proxy.name.startswith("proxy:")
    assert "proxy_hm" in report.summary.columns
    assert "not comparable" in report.format()
    assert report.files["summary"].name.startswith("summary_proxy")
    ratings = EvalStore(out).ratings(proxy.name)
    assert set(ratings["judge"]) == {proxy.name} and len(ratings) == 120
    # The LLM-judge results of another judge live beside, under their own name.
    rescore(out, HashJudge(), progress=False)
    assert len(EvalStore(out).ratings("fake:hash")) == 120
    assert pd.read_parquet(report.files["scores"])["proxy_hm"].notna().all()


def test_baseline_winrate_and_unsteered_method(
    concept_dir: Path, setup: tuple[Any, Any, dict[str, Any]], tmp_path: Path
) -> None:
    model, tok, deltas = setup
    out = tmp_path / "out"
    judge = HashJudge()
    run(model, tok, concept_dir, None, judge, out, factors=None, method="base")
    base = EvalStore(out).generations("base")
    assert set(base["factor"]) == {0.0} and len(base) == 20
    report = run(model, tok, concept_dir, deltas, judge, out, baseline="base")
    assert report is not None
    assert set(report.summary["method"]) == {"base", "steered"}
    assert list(report.winrates) == ["steered vs base"]
    assert 0.0 <= report.winrates["steered vs base"] <= 1.0


def test_settings_and_delta_changes_are_refused(
    concept_dir: Path, setup: tuple[Any, Any, dict[str, Any]], tmp_path: Path
) -> None:
    model, tok, deltas = setup
    out = tmp_path / "out"
    run(model, tok, concept_dir, {"0": deltas["0"]}, None, out)
    with pytest.raises(DataError, match="other settings"):
        eval_axbench(
            model, tok, concept_dir, {"0": deltas["0"]}, None, FACTORS, out,
            instructions=INSTRUCTIONS, settings=AxBenchSettings(max_new_tokens=5), progress=False,
        )  # fmt: skip
    other = make_delta(model, "vector", layer=1, seed=7)
    with pytest.raises(DataError, match="another delta"):
        run(model, tok, concept_dir, {"0": other}, None, out)


def test_saved_deltas_by_concept(
    concept_dir: Path, setup: tuple[Any, Any, dict[str, Any]], tmp_path: Path
) -> None:
    model, tok, _ = setup
    d = unisteer.new_delta(model, "vector", 1, meta={"concept_id": 1})
    unisteer.save_delta(d, tmp_path / "d1")
    unisteer.save_delta(unisteer.new_delta(model, "vector", 1), tmp_path / "concept_0")
    found = delta_dirs_by_concept([tmp_path / "d1", tmp_path / "concept_0"])
    assert found == {"1": tmp_path / "d1", "concept_0": tmp_path / "concept_0"}
    from unisteer.evaluate.axbench.concepts import read_concepts

    concepts = read_concepts(concept_dir)
    assert resolve_concept("concept_0", concepts).concept_id == 0
    assert resolve_concept("greetings", concepts).concept_id == 1
    assert resolve_concept(1, concepts).concept_id == 1
    with pytest.raises(DataError, match="no concept"):
        resolve_concept("volcanoes", concepts)
    report = run(model, tok, concept_dir, found, HashJudge(), tmp_path / "out", factors=[1.0])
    assert report is not None and len(report.selected) == 2


# -- accuracy -----------------------------------------------------------------------------------


def yes_no_pairs(n: int = 6) -> list[PolarityPair]:
    questions = ["are you helpful ?", "is the sea blue ?", "do you like it ?", "hello ?"]
    return [
        PolarityPair(questions[i % 4] + " " + "good " * (i // 4), "yes", "no", id=f"q{i}")
        for i in range(n)
    ]


def test_pair_accuracy_matches_preference() -> None:
    model = tiny_model("llama")
    tok = word_tokenizer(chat_template=CHATML)
    pairs = yes_no_pairs()
    delta = make_delta(model, "vector", layer=1)
    for d, m in ((None, 0.0), (delta, 3.0), (delta, -3.0)):
        result = pair_accuracy(model, tok, pairs, d, m)
        table = score_pairs(model, tok, pairs, d, m)
        expected = float((table["loss_neg"] > table["loss_pos"]).mean())
        assert result.accuracy == pytest.approx(expected) and result.n == len(pairs)
    summary, table = accuracy_by_m(model, tok, pairs, delta, [-3.0, 0.0, 3.0])
    assert summary["m"].tolist() == [-3.0, 0.0, 3.0]
    assert summary["accuracy"].iloc[2] == pytest.approx(
        pair_accuracy(model, tok, pairs, delta, 3.0).accuracy
    )
    assert summary["accuracy"].iloc[1] == pytest.approx(pair_accuracy(model, tok, pairs).accuracy)
    with pytest.raises(ValueError):
        pair_accuracy(model, tok, [], None)


def test_eval_accuracy_writes_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model("llama")
    tok = word_tokenizer(chat_template=CHATML)
    pairs = yes_no_pairs()
    delta = make_delta(model, "lora", layer=1)
    unisteer.save_delta(delta, tmp_path / "saved")
    deltas: dict[str, Any] = {"base": None, "lora": delta, "saved": tmp_path / "saved"}
    result = eval_accuracy(model, tok, pairs, deltas, [-1.0, 1.0], tmp_path / "out", progress=False)
    assert set(result["delta"]) == {"base", "lora", "saved"}
    assert result[result.delta == "base"]["m"].tolist() == [0.0]
    lora = result[result.delta == "lora"].reset_index(drop=True)
    saved = result[result.delta == "saved"].reset_index(drop=True)
    pd.testing.assert_series_equal(lora["accuracy"], saved["accuracy"])
    assert (tmp_path / "out" / "accuracy.json").is_file()
    import unisteer.evaluate.accuracy as accuracy_module

    calls: list[Sequence[float]] = []
    real = accuracy_module.accuracy_by_m

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[4])
        return real(*args, **kwargs)

    monkeypatch.setattr(accuracy_module, "accuracy_by_m", counting)
    again = eval_accuracy(
        model, tok, pairs, deltas, [-1.0, 1.0, 2.0], tmp_path / "out", progress=False
    )
    assert calls == [[2.0], [2.0]]  # only the new m, for the two deltas
    assert len(again) == 1 + 3 + 3
    with pytest.raises(DataError, match="other pairs"):
        eval_accuracy(model, tok, pairs[:3], deltas, [1.0], tmp_path / "out", progress=False)


# -- the real default model ---------------------------------------------------------------------


@pytest.mark.slow
def test_axbench_smoke_on_the_default_model(shared_data: Path, tmp_path: Path) -> None:
    model, tok = unisteer.load_model()
    concepts = shared_data / "axbench/concept10/prod_2b_l10_v1"
    delta = unisteer.new_delta(model, "vector", 15, tokenizer=tok)
    with torch.no_grad():
        delta.bias_.normal_(generator=torch.Generator().manual_seed(0))
    proxy = ProxyJudge.fit(concepts, model=model, tokenizer=tok, embeddings="tfidf",
                           concept_ids=[0], fluency_calibration_size=4)  # fmt: skip
    report = eval_axbench(
        model, tok, concepts, {"0": delta}, proxy, [0.0, 4.0], tmp_path,
        instructions=shared_data / "alpaca_eval",
        settings=AxBenchSettings(max_new_tokens=8), batch_size=10, progress=False,
    )  # fmt: skip
    assert report is not None and len(report.scores) == 20
    assert report.scores["text"].str.len().gt(0).all()
    assert set(report.scores["proxy_fluency_score"]) <= {0, 1, 2}
