"""The AxBench protocol under a controller: ``factor`` is the setting (kappa), the m_t trace is
stored, static_kl's profile comes from the selection instructions only, and resuming or
changing the controller behave like the multiplier grid does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_evaluate_run import HashJudge

from tiny_axbench import INSTRUCTIONS, make_concept_dir
from unisteer.control import choose_static
from unisteer.control.spec import ControlSpec, control_spec
from unisteer.errors import DataError
from unisteer.evaluate import AxBenchSettings, eval_axbench
from unisteer.evaluate.axbench.store import EvalStore

from conftest import make_delta
from tiny_models import tiny_model
from tiny_tokenizers import CHATML, word_tokenizer

SETTINGS = AxBenchSettings(max_new_tokens=4, seed=3)
M_MAX = 2.0


@pytest.fixture(scope="module")
def concept_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_concept_dir(tmp_path_factory.mktemp("concepts"))


@pytest.fixture(scope="module")
def setup() -> tuple[Any, Any, Any]:
    model = tiny_model("llama")
    tok = word_tokenizer(chat_template=CHATML)
    delta = make_delta(model, "vector", layer=1, seed=0)
    return model, tok, delta


def run(setup: tuple[Any, Any, Any], concept_dir: Path, out: Path, **kw: Any) -> Any:
    model, tok, delta = setup
    deltas = kw.pop("deltas", {"0": delta})
    return eval_axbench(
        model, tok, concept_dir, deltas, kw.pop("judge", HashJudge()), kw.pop("factors"), out,
        instructions=INSTRUCTIONS, settings=SETTINGS, batch_size=4, progress=False, **kw,
    )  # fmt: skip


def test_kl_budget_generations_carry_their_trace(
    setup: tuple[Any, Any, Any], concept_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    spec = ControlSpec("kl_budget", m_max=M_MAX, k=3)
    report = run(setup, concept_dir, out, factors=[0.0, 0.5, float("inf")], controller=spec,
                 method="kl")  # fmt: skip
    run(setup, concept_dir, out, factors=[0.0], deltas=None, method="base")
    gens = EvalStore(out).generations()
    kl = gens[gens["method"] == "kl"]
    assert len(kl) == 10 * 3 and set(kl["controller"]) == {"kl_budget"}
    for r in kl.itertuples(index=False):
        trace = list(r.m_trace)
        assert len(trace) == r.n_tokens and set(trace) <= {0.0, 1.0, M_MAX}
        assert r.m_mean == pytest.approx(sum(trace) / len(trace) if trace else 0.0)
        if r.factor == 0.0:
            assert set(trace) <= {0.0}
        if r.factor == float("inf"):
            assert set(trace) == {M_MAX}
    # kappa = 0 is the unsteered model: the same seeds (factor 0) give the same texts.
    base = gens[(gens["method"] == "base") & (gens["concept_id"] == 0)].set_index("input_id")[
        "text"
    ]
    zero = kl[kl["factor"] == 0.0].set_index("input_id")["text"]
    assert zero.sort_index().tolist() == base.sort_index().tolist()
    # Selection works on the settings: one kappa per concept, reported on 5-9.
    assert set(report.selected["factor"]) <= {0.0, 0.5, float("inf")}
    stored = json.loads((out / "run.json").read_text())["methods"]["kl"]["generation"]
    assert stored["controller"] == {"name": "kl_budget", "m_max": M_MAX, "k": 3}


def test_static_kl_calibrates_on_the_selection_instructions(
    setup: tuple[Any, Any, Any], concept_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    spec = ControlSpec("static_kl", m_max=M_MAX, points=3)
    kappas = [0.0, 0.01, float("inf")]
    run(setup, concept_dir, out, factors=kappas, controller=spec, method="static")
    profile = json.loads((out / "run.json").read_text())["profiles"]["static/0"]
    assert profile["spec"] == spec.describe() and profile["grid"] == [0.0, 1.0, 2.0]
    gens = EvalStore(out).generations("static")
    assert "m_trace" not in gens.columns and set(gens["controller"]) == {"static_kl"}
    for kappa in kappas:
        m = choose_static(profile["grid"], profile["percentile"], kappa)
        assert set(gens[gens["factor"] == kappa]["m_mean"]) == {m}
    assert set(gens[gens["factor"] == float("inf")]["m_mean"]) == {M_MAX}
    # Resuming computes nothing again (the profile is read back, no generation is redone).
    before = (out / "run.json").read_text()
    judge = HashJudge()
    run(setup, concept_dir, out, factors=kappas, controller=spec, method="static", judge=judge)
    assert judge.calls == 0
    assert json.loads(before)["profiles"] == json.loads((out / "run.json").read_text())["profiles"]


def test_controller_changes_and_missing_m_max_are_refused(
    setup: tuple[Any, Any, Any], concept_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run(setup, concept_dir, out, factors=[0.5], method="m", judge=None)
    with pytest.raises(DataError, match="other settings"):
        run(setup, concept_dir, out, factors=[0.5], method="m", judge=None,
            controller=ControlSpec("kl_budget", m_max=M_MAX))  # fmt: skip
    # m_max left to the delta, which records no grid: the error says what to give.
    with pytest.raises(DataError, match="records no multiplier grid"):
        run(setup, concept_dir, tmp_path / "o2", factors=[0.5], judge=None,
            controller=ControlSpec("kl_budget"))  # fmt: skip
    with pytest.raises(ValueError, match="KL budgets are >= 0"):
        run(setup, concept_dir, tmp_path / "o3", factors=[-1.0], judge=None,
            controller=ControlSpec("kl_budget", m_max=M_MAX))  # fmt: skip


def test_a_delta_grid_gives_m_max(
    setup: tuple[Any, Any, Any], concept_dir: Path, tmp_path: Path
) -> None:
    model = setup[0]
    gridded = make_delta(model, "vector", layer=1, seed=0)
    gridded.meta["grid"] = [-3.0, 0.0, 1.5]
    run(setup, concept_dir, tmp_path / "out", factors=[float("inf")], judge=None,
        deltas={"0": gridded}, controller=ControlSpec("kl_budget", k=2))  # fmt: skip
    gens = EvalStore(tmp_path / "out").generations()
    assert {m for t in gens["m_trace"] for m in t} == {1.5}


def test_control_spec_names_every_bad_field() -> None:
    assert control_spec({"name": "kl_budget", "m_max": 4, "k": 3}).describe() == {
        "name": "kl_budget", "m_max": 4.0, "k": 3,
    }  # fmt: skip
    for fields, says in [
        ({"name": "pid"}, "one of fixed, kl_budget, static_kl"),
        ({"name": "kl_budget", "kappa": 1}, "unknown key 'kappa'"),
        ({"k": "8"}, "control.k: expected an integer"),
        ({"m_max": True}, "control.m_max: expected a number"),
        ({"m_max": 0}, "m_max must be a finite number other than 0"),
        ({"k": 1}, "k must be at least 2"),
        ({"q": 0}, "q must be a percentile"),
    ]:
        with pytest.raises(ValueError, match=says):
            control_spec(fields, "control")
    spec = ControlSpec("kl_budget", m_max=2.0, k=3)
    assert spec.at(0.5).candidates == (0.0, 1.0, 2.0) and spec.at(0.5).kappa == 0.5
    assert ControlSpec("fixed").at(1.5).candidates == (1.5,)
    with pytest.raises(ValueError, match="needs the KL profile"):
        ControlSpec("static_kl", m_max=2.0).at(0.5)
    static = ControlSpec("static_kl", m_max=2.0).at(0.5, ([0.0, 1.0, 2.0], [0.0, 1.0, 2.0]))
    assert static.candidates == (0.5,)
