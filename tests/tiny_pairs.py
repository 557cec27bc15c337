"""Random polarity pairs over the tiny tokenizers' vocabulary, for tests on tiny models."""

from __future__ import annotations

import random

from unisteer.data import PolarityPair

from tiny_tokenizers import WORDS


def random_pairs(n: int, seed: int = 0) -> list[PolarityPair]:
    """``n`` pairs of random words (queries of 2-6 words, completions of 1-8), ids ``p0..``."""
    rng = random.Random(seed)
    w = [x for x in WORDS if x.strip()]

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choices(w, k=rng.randint(lo, hi)))

    return [PolarityPair(text(2, 6), text(1, 8), text(1, 8), id=f"p{i}") for i in range(n)]
