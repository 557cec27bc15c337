"""Repetition statistics of a text (LLM-free fluency signals): distinct-n and repeated n-grams.

Words are lower-cased runs of letters and digits, and single punctuation marks.
"""

from __future__ import annotations

import re
from collections import Counter

_WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(tokens: list[str], n: int) -> float:
    """Distinct n-grams / all n-grams (1.0 for texts too short to have any)."""
    grams = ngrams(tokens, n)
    return len(set(grams)) / len(grams) if grams else 1.0


def repeated_ngram_rate(tokens: list[str], n: int) -> float:
    """The fraction of n-gram occurrences that repeat an earlier one (0.0 = no repetition)."""
    grams = ngrams(tokens, n)
    if not grams:
        return 0.0
    counts = Counter(grams)
    return sum(c - 1 for c in counts.values()) / len(grams)


def repetition_stats(text: str) -> dict[str, float]:
    """``distinct_1``, ``distinct_2``, ``repeated_3`` (see above) and ``n_words``."""
    tokens = words(text)
    return {
        "distinct_1": distinct_n(tokens, 1),
        "distinct_2": distinct_n(tokens, 2),
        "repeated_3": repeated_ngram_rate(tokens, 3),
        "n_words": float(len(tokens)),
    }
