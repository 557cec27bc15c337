"""The project's own default dataset: sizes, fixed split, sentence completions, balance."""

from __future__ import annotations

import statistics

import pytest

from unisteer.data import DEFAULT_CONCEPTS, default_dataset, default_split
from unisteer.errors import DataError


@pytest.mark.parametrize("concept", DEFAULT_CONCEPTS)
def test_sizes_split_and_ids(concept: str) -> None:
    pairs = default_dataset(concept)
    assert len(pairs) == 160 and not pairs.problems
    assert [p.id for p in pairs] == [f"{concept}-{i:03d}" for i in range(160)]
    train, test = default_split(concept)
    assert (len(train), len(test)) == (128, 32)
    assert [p.id for p in test] == [f"{concept}-{i:03d}" for i in range(128, 160)]
    assert all(p.meta["concept"] == concept for p in pairs)
    assert len({p.query for p in pairs}) == 160


@pytest.mark.parametrize("concept", DEFAULT_CONCEPTS)
def test_completions_are_full_sentences_of_comparable_length(concept: str) -> None:
    pairs = default_dataset(concept)
    for p in pairs:
        for text in (p.positive, p.negative):
            assert len(text.split()) >= 12, (p.id, text)
            assert text.rstrip()[-1] in ".!?", (p.id, text)
            assert text.isascii(), (p.id, text)
        assert p.positive != p.negative
    ratio = statistics.fmean(len(p.negative.split()) for p in pairs) / statistics.fmean(
        len(p.positive.split()) for p in pairs
    )
    assert 0.77 <= ratio <= 1.3


def test_all_concepts_together_and_unknown_concept() -> None:
    assert len(default_dataset()) == 160 * len(DEFAULT_CONCEPTS)
    with pytest.raises(DataError, match="unknown default concept 'humour'"):
        default_dataset("humour")


@pytest.mark.slow
@pytest.mark.parametrize("concept", DEFAULT_CONCEPTS)
def test_token_lengths_balanced_on_default_model(concept: str) -> None:
    import unisteer

    _, tok = unisteer.load_model()
    pairs = default_dataset(concept)

    def n(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    ratio = statistics.fmean(n(p.negative) for p in pairs) / statistics.fmean(
        n(p.positive) for p in pairs
    )
    assert 0.7 <= ratio <= 1 / 0.7
