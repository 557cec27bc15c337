"""The judge interface: ``rate(criterion, concept, instruction, text) -> (score, rationale)``.

A judge gives one of three ratings, 0, 1 or 2, for one of three criteria:

* ``concept``: how clearly the concept shows in the text (the instruction is not shown);
* ``instruction``: whether the text is about what the instruction asks;
* ``fluency``: how fluent the text is (neither concept nor instruction is shown).

Every judge has a ``name`` that is stored with each of its scores. Judges that are not language
models reading the AxBench-style prompts (the offline proxy judge) set ``is_proxy``: their
names start with ``proxy:`` and their score columns with ``proxy_``, so that proxy numbers are
never mistaken for judge numbers.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from unisteer.errors import UnisteerError
from unisteer.evaluate.judges.prompts import Criterion, build_prompt, check_criterion, parse_rating

SCORES = (0, 1, 2)


class JudgeError(UnisteerError):
    """A judge could not give a rating (e.g. its server kept failing); nothing was scored."""


@dataclass(frozen=True)
class RatingRequest:
    """What one rating is about."""

    criterion: Criterion
    concept: str
    instruction: str
    text: str


@dataclass(frozen=True)
class Score:
    """One stored rating: the criterion, the 0/1/2 score, the judge's rationale and its name."""

    criterion: Criterion
    score: int
    rationale: str
    judge: str


class Judge(ABC):
    """Base class of every judge. Subclasses implement :meth:`rate` (and may batch in
    :meth:`rate_many`)."""

    name: str = "judge"
    is_proxy: bool = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.parse_failures = 0  # answers without a valid rating (scored 0)
        self.ratings = 0  # ratings given

    @property
    def column_prefix(self) -> str:
        """``"proxy_"`` for proxy judges, else ``""``: the prefix of score columns."""
        return "proxy_" if self.is_proxy else ""

    def provenance(self) -> dict[str, Any]:
        """What to record beside the scores (name and settings; never a secret)."""
        return {"judge": self.name, "is_proxy": self.is_proxy}

    def _count(self, n: int, failures: int = 0) -> None:
        with self._lock:
            self.ratings += n
            self.parse_failures += failures

    @abstractmethod
    def rate(
        self, criterion: Criterion, concept: str, instruction: str, text: str
    ) -> tuple[int, str]:
        """The score (0, 1 or 2) and a rationale for one text under one criterion."""

    def rate_many(
        self, requests: Sequence[RatingRequest], *, progress: bool = False
    ) -> list[tuple[int, str]]:
        """Scores for many requests, in order (sequential unless a subclass batches)."""
        return [
            self.rate(r.criterion, r.concept, r.instruction, r.text)
            for r in tqdm(requests, desc=f"rating ({self.name})", disable=not progress)
        ]

    def scores(self, requests: Sequence[RatingRequest], *, progress: bool = False) -> list[Score]:
        """:meth:`rate_many` as :class:`Score` records carrying this judge's name."""
        rated = self.rate_many(requests, progress=progress)
        return [
            Score(r.criterion, int(s), str(why), self.name)
            for r, (s, why) in zip(requests, rated, strict=True)
        ]


class PromptJudge(Judge):
    """A judge that asks a language model (prompts in :mod:`unisteer.evaluate.prompts`) and
    reads ``Rating: [[N]]`` from its answer. An answer without a valid rating scores 0 and is
    counted in ``parse_failures``; the answer itself is the rationale."""

    @abstractmethod
    def complete(self, prompts: Sequence[str], *, progress: bool = False) -> list[str]:
        """The model's answers to ``prompts``, in order."""

    def rate(
        self, criterion: Criterion, concept: str, instruction: str, text: str
    ) -> tuple[int, str]:
        return self.rate_many([RatingRequest(criterion, concept, instruction, text)])[0]

    def rate_many(
        self, requests: Sequence[RatingRequest], *, progress: bool = False
    ) -> list[tuple[int, str]]:
        prompts = [
            build_prompt(check_criterion(r.criterion), r.concept, r.instruction, r.text)
            for r in requests
        ]
        answers = self.complete(prompts, progress=progress)
        out: list[tuple[int, str]] = []
        failures = 0
        for answer in answers:
            score = parse_rating(answer)
            if score is None:
                failures += 1
                score = 0
            out.append((score, answer))
        self._count(len(out), failures)
        return out
