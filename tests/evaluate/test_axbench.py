"""The AxBench protocol: instruction sampling, split, harmonic mean, factor selection, winrate.

The small synthetic concept data lives in ``tests/tiny_axbench.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tiny_axbench import INSTRUCTIONS, make_concept_dir
from unisteer.errors import DataError
from unisteer.evaluate.axbench.concepts import Concept, read_concepts
from unisteer.evaluate.axbench.protocol import (
    AXBENCH_FACTORS,
    VECTOR_FACTORS,
    add_harmonic_mean,
    default_factors,
    harmonic_mean,
    load_alpaca_instructions,
    sample_instructions,
    select_factors,
    split_name,
    steering_rows,
    summarize,
    winrate,
)

# -- instructions -------------------------------------------------------------------------------


def test_alpaca_sampling_matches_axbench(shared_data: Path) -> None:
    frame = load_alpaca_instructions(shared_data / "alpaca_eval")
    assert len(frame) == 805
    assert frame["instruction"][0].startswith("What are the names of some famous actors")
    raw = pd.read_json(shared_data / "alpaca_eval" / "alpaca_eval_instructions.json")
    for cid in (0, 1, 7, 499):
        expected = raw.sample(10, random_state=cid)["instruction"].tolist()
        assert sample_instructions(frame, cid) == expected
    # Pinned: a change of file order or of the sampling call would break AxBench parity.
    assert raw.sample(10, random_state=7).index.tolist() == [
        601, 796, 643, 272, 498, 716, 401, 372, 34, 61
    ]  # fmt: skip
    assert sample_instructions(frame, 0)[0].startswith("What are different drawers")


def test_alpaca_file_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    short = tmp_path / "alpaca_eval_instructions.json"
    short.write_text(json.dumps([{"instruction": "x"}] * 10))
    with pytest.raises(DataError, match="805"):
        load_alpaca_instructions(tmp_path)
    short.write_text("not json")
    with pytest.raises(DataError, match="JSON"):
        load_alpaca_instructions(short)
    monkeypatch.setenv("UNISTEER_ALPACA_EVAL", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="cannot find"):
        load_alpaca_instructions()


def test_steering_rows_grid_and_split() -> None:
    concept = Concept(3, "the sea")
    rows = steering_rows(concept, INSTRUCTIONS, [0.5, 1.0, 2.0])
    assert len(rows) == 30
    assert list(rows.columns) == [
        "concept_id", "concept", "input_id", "split", "instruction", "factor"
    ]  # fmt: skip
    assert rows.groupby("input_id")["factor"].apply(list).tolist() == [[0.5, 1.0, 2.0]] * 10
    assert set(rows[rows.input_id < 5]["split"]) == {"select"}
    assert set(rows[rows.input_id >= 5]["split"]) == {"report"}
    chosen = rows.drop_duplicates("input_id")["instruction"].tolist()
    assert chosen == sample_instructions(INSTRUCTIONS, 3)
    assert split_name(4) == "select" and split_name(5) == "report"


def test_default_factors() -> None:
    assert default_factors("vector") == VECTOR_FACTORS
    assert default_factors("lora") == default_factors("local_weight") == AXBENCH_FACTORS
    assert len(AXBENCH_FACTORS) == 14 and AXBENCH_FACTORS[-1] == 5.0
    assert default_factors(None) == (0.0,)


# -- scores -------------------------------------------------------------------------------------


def test_harmonic_mean_values() -> None:
    assert harmonic_mean(2, 2, 2) == 2.0
    assert harmonic_mean(1, 1, 1) == 1.0
    assert harmonic_mean(1, 1, 2) == pytest.approx(1.2)
    assert harmonic_mean(1, 2, 2) == pytest.approx(1.5)
    assert harmonic_mean(0, 2, 2) == 0.0
    assert harmonic_mean(2, 2, float("nan")) == 0.0
    frame = pd.DataFrame(
        {
            "proxy_concept_score": [2, 1, 0, 1],
            "proxy_instruction_score": [2, 1, 2, 2],
            "proxy_fluency_score": [2, 2, 2, 2],
        }
    )
    hm = add_harmonic_mean(frame, "proxy_")["proxy_hm"].tolist()
    assert hm == pytest.approx([2.0, 1.2, 0.0, 1.5])


def scores_frame(values: dict[tuple[str, int], dict[float, tuple[list[float], list[float]]]]):  # type: ignore[no-untyped-def]
    """Rows from {(method, concept): {factor: (select HMs, report HMs)}} (HM = all three)."""
    rows = []
    for (method, cid), by_factor in values.items():
        for factor, (select, report) in by_factor.items():
            for i, hm in enumerate(select + report):
                rows.append(
                    {
                        "method": method,
                        "concept_id": cid,
                        "input_id": i,
                        "split": "select" if i < len(select) else "report",
                        "factor": factor,
                        "concept_score": hm,
                        "instruction_score": hm,
                        "fluency_score": hm,
                        "hm": hm,
                    }
                )
    return pd.DataFrame(rows)


def test_selection_uses_select_split_and_reports_the_other() -> None:
    scores = scores_frame(
        {
            # factor 2 wins on selection (1.6 vs 1.0) but is worse on report: report says 0.4.
            ("m", 0): {
                1.0: ([1, 1, 1, 1, 1], [2, 2, 2, 2, 2]),
                2.0: ([2, 2, 2, 1, 1], [0, 0, 2, 0, 0]),
            },
            # a tie on selection goes to the smallest factor
            ("m", 1): {
                0.5: ([1, 1, 1, 1, 1], [1, 1, 1, 1, 1]),
                4.0: ([1, 1, 1, 1, 1], [2, 2, 2, 2, 2]),
            },
            ("base", 0): {0.0: ([1, 1, 1, 1, 1], [0.4, 0.4, 0.4, 0.4, 0.4])},
            ("base", 1): {0.0: ([1, 1, 1, 1, 1], [1.5, 1.5, 1.5, 1.5, 1.5])},
        }
    )  # fmt: skip
    selected = select_factors(scores).set_index(["method", "concept_id"])
    assert selected.loc[("m", 0), "factor"] == 2.0
    assert selected.loc[("m", 0), "select_hm"] == pytest.approx(1.6)
    assert selected.loc[("m", 0), "hm"] == pytest.approx(0.4)
    assert selected.loc[("m", 1), "factor"] == 0.5
    assert selected.loc[("m", 1), "hm"] == pytest.approx(1.0)
    summary = summarize(selected.reset_index()).set_index("method")
    assert summary.loc["m", "hm"] == pytest.approx(0.7)
    assert summary.loc["m", "n_concepts"] == 2
    # m vs base: concept 0 tie (0.4 = 0.4) → 0.5, concept 1 loses (1.0 < 1.5) → 0.
    assert winrate(selected.reset_index(), "m", "base") == pytest.approx(0.25)
    assert winrate(selected.reset_index(), "base", "m") == pytest.approx(0.75)
    with pytest.raises(ValueError, match="no concept"):
        winrate(selected.reset_index(), "m", "other")


def test_hm_is_averaged_per_generation_not_from_means() -> None:
    frame = pd.DataFrame(
        {
            "method": "m",
            "concept_id": 0,
            "input_id": range(10),
            "split": ["select"] * 5 + ["report"] * 5,
            "factor": 1.0,
            "concept_score": [2, 0] * 5,
            "instruction_score": [0, 2] * 5,
            "fluency_score": [2] * 10,
        }
    )
    selected = select_factors(add_harmonic_mean(frame))
    assert float(selected["hm"].iloc[0]) == 0.0  # every generation has a zero somewhere
    assert float(selected["concept_score"].iloc[0]) == pytest.approx(np.mean([0, 2, 0, 2, 0]))


def test_read_concepts(tmp_path: Path, shared_data: Path) -> None:
    root = make_concept_dir(tmp_path / "c")
    assert read_concepts(root) == [Concept(0, "the sea", "text"), Concept(1, "greetings", "text")]
    (root / "generate" / "metadata.jsonl").unlink()
    assert [c.concept for c in read_concepts(root / "generate")] == ["the sea", "greetings"]
    real = read_concepts(shared_data / "axbench/concept10/prod_2b_l10_v1")
    assert len(real) == 10 and real[4].genre == "code"
