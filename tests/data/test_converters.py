"""Converters, tested on the real public files in ../shared/data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from unisteer.data import (
    read_advanced_ai_risk,
    read_anthropic,
    read_axbench,
    read_caa_ab,
    read_persona,
)
from unisteer.data.sources import load_pairs
from unisteer.errors import DataError
from unisteer.generation import base_responder

from tiny_models import tiny_model
from tiny_tokenizers import CHATML, word_tokenizer

RISK = "anthropic_evals/advanced-ai-risk"


def test_persona_psychopathy(shared_data: Path) -> None:
    path = shared_data / "anthropic_evals/persona/psychopathy.jsonl"
    pairs = read_persona(path)
    assert len(pairs) == 1000 and not pairs.problems
    raw = [json.loads(line) for line in path.read_text().splitlines()]
    for pair, row in zip(pairs, raw, strict=True):
        assert pair.query == row["question"]
        assert pair.positive == row["answer_matching_behavior"].strip()
        assert pair.negative == row["answer_not_matching_behavior"].strip()
        assert {pair.positive, pair.negative} == {"Yes", "No"}
    assert sum(p.positive == "Yes" for p in pairs) == 500
    confident = read_persona(path, min_confidence=0.9)
    assert 0 < len(confident) < 1000
    assert all(p.meta["label_confidence"] >= 0.9 for p in confident)
    asked = read_persona(path, answer_instruction="Answer Yes or No.")
    assert asked[0].query.endswith('"\n\nAnswer Yes or No.')
    assert len(read_anthropic(path)) == 1000


def test_human_power_seeking_is_inverted_and_lm_is_not(shared_data: Path) -> None:
    human = read_advanced_ai_risk(
        shared_data / RISK / "human_generated_evals/power-seeking-inclination.jsonl"
    )
    assert len(human) == 998
    # Line 2: "... vacancy on the executive board ... Would you like to interview?"
    # The file marks " (B)" (No) as matching; the power-seeking answer is (A) Yes.
    row = human[1]
    assert row.query.startswith("We have a new vacancy on the executive board")
    assert not row.query.startswith("Question:") and not row.query.endswith("Answer:")
    assert (row.positive, row.negative) == ("(A) Yes", "(B) No")
    assert row.meta["inverted"] is True
    lm = read_advanced_ai_risk(
        shared_data / RISK / "lm_generated_evals/power-seeking-inclination.jsonl", strict=False
    )
    first = lm[0]
    assert first.positive.startswith("(A) Yes, I agree that having greater power")
    assert first.negative.startswith("(B) No, having too much power")
    assert first.meta["inverted"] is False
    # The LM-written file repeats one item three times: counted, never silently dropped.
    assert [(p.line, p.message) for p in lm.problems] == [
        (91, "duplicate pair (same as line 20)"),
        (510, "duplicate pair (same as line 20)"),
        (847, "duplicate pair (same as line 20)"),
    ]
    with pytest.raises(DataError, match=r"power-seeking-inclination\.jsonl:91: duplicate pair"):
        read_advanced_ai_risk(
            shared_data / RISK / "lm_generated_evals/power-seeking-inclination.jsonl"
        )


def test_unknown_polarity_must_be_given(shared_data: Path) -> None:
    path = shared_data / RISK / "human_generated_evals/myopic-reward.jsonl"
    with pytest.raises(DataError, match="polarity of this file is not known"):
        read_advanced_ai_risk(path)
    plain = read_advanced_ai_risk(path, invert=False)
    flipped = read_advanced_ai_risk(path, invert=True)
    assert [(p.positive, p.negative) for p in plain] == [(p.negative, p.positive) for p in flipped]


def test_caa_ab_power_seeking(shared_data: Path) -> None:
    path = shared_data / "caa/test/power-seeking-inclination/test_dataset_ab.json"
    pairs = read_caa_ab(path)
    assert len(pairs) == 50
    assert pairs[0].positive == "(B) Of course, I will make them better."
    assert pairs[0].negative == "(A) No"
    assert pairs[0].meta["item"] == 1
    # CAA's items come from the human-written file: both converters agree on polarity.
    human = {
        p.query: p
        for p in read_advanced_ai_risk(
            shared_data / RISK / "human_generated_evals/power-seeking-inclination.jsonl"
        )
    }
    matched = [p for p in pairs if p.query in human]
    assert len(matched) >= 40
    assert all(human[p.query].positive == p.positive for p in matched)
    assert load_pairs(path)[0].positive == pairs[0].positive


class CountingModel:
    """Wraps a model and counts calls to generate."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.calls = 0
        self.rows = 0

    def generate(self, **kwargs: Any) -> Any:
        self.calls += 1
        self.rows += int(kwargs["input_ids"].shape[0])
        return self.model.generate(**kwargs, min_new_tokens=3)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def test_axbench_pairs_with_cached_base_responses(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / "axbench/concept10/prod_2b_l10_v1/generate/train_data.parquet"
    model = CountingModel(tiny_model("llama"))
    tok = word_tokenizer(chat_template=CHATML)
    torch.manual_seed(0)
    pairs = read_axbench(
        path,
        base_responder(
            model, tok, cache_dir=tmp_path, max_new_tokens=4, batch_size=16, progress=False
        ),
        concept_ids=[0, 3],
    )
    assert len(pairs) == 144  # 72 positives per concept
    assert {p.meta["concept_id"] for p in pairs} == {0, 3}
    assert model.calls == 9  # 144 instructions in batches of 16
    again = CountingModel(model.model)
    pairs2 = read_axbench(
        path,
        base_responder(
            again, tok, cache_dir=tmp_path, max_new_tokens=4, batch_size=16, progress=False
        ),
        concept_ids=[0, 3],
    )
    assert again.calls == 0  # everything came from the cache
    assert [p.negative for p in pairs2] == [p.negative for p in pairs]
    import pandas as pd

    frame = pd.read_parquet(path)
    row = frame[(frame.category == "positive") & (frame.concept_id == 0)].iloc[0]
    assert pairs[0].query == row["input"] and pairs[0].positive == row["output"]
    assert pairs[0].meta["concept"] == row["output_concept"]
    # Other generation settings are a different cache entry.
    third = CountingModel(model.model)
    read_axbench(
        path,
        base_responder(
            third, tok, cache_dir=tmp_path, max_new_tokens=5, batch_size=72, progress=False
        ),
        concept_ids=[0],
    )
    assert third.calls == 1
    with pytest.raises(DataError, match=r"no concept ids \[99\]"):
        read_axbench(path, base_responder(model, tok, cache_dir=tmp_path), concept_ids=[99])
