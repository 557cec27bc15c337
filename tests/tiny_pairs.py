"""Random polarity pairs over the tiny tokenizers' vocabulary, for tests on tiny models."""

from __future__ import annotations

import random
from pathlib import Path

from unisteer.data import PairSet, PolarityPair
from unisteer.experiment import parse_experiment, run_experiment
from unisteer.report.results import ExperimentResults

from tiny_tokenizers import WORDS


def random_pairs(n: int, seed: int = 0) -> list[PolarityPair]:
    """``n`` pairs of random words (queries of 2-6 words, completions of 1-8), ids ``p0..``."""
    rng = random.Random(seed)
    w = [x for x in WORDS if x.strip()]

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choices(w, k=rng.randint(lo, hi)))

    return [PolarityPair(text(2, 6), text(1, 8), text(1, 8), id=f"p{i}") for i in range(n)]


def split_pairs_file(directory: Path, n: int = 14, n_train: int = 10, seed: int = 4) -> Path:
    """``n`` random pairs with a fixed split (the first ``n_train`` train, the rest test),
    written as ``pairs.jsonl`` in ``directory``: the data of the tiny experiments."""
    pairs = [
        type(p)(
            p.query, p.positive, p.negative, p.id, {"split": "train" if i < n_train else "test"}
        )
        for i, p in enumerate(random_pairs(n, seed=seed))
    ]
    return PairSet(pairs).to_jsonl(directory / "pairs.jsonl")


def run_tiny(text: str, directory: Path) -> tuple[ExperimentResults, Path]:
    """Run the experiment ``text`` (TOML) on the tiny llama and the ChatML word tokenizer,
    silently, into ``directory/out``."""
    from tiny_models import tiny_model
    from tiny_tokenizers import CHATML, word_tokenizer

    out = directory / "out"
    results = run_experiment(
        parse_experiment(text, str(directory / "tiny.toml")),
        out=out,
        model=tiny_model("llama"),
        tokenizer=word_tokenizer(chat_template=CHATML),
        progress=False,
        log=lambda _: None,
    )
    return results, out
