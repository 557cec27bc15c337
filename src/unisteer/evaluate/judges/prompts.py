"""The three rating prompts (concept, instruction, fluency) and the parser of their answers.

The protocol follows AxBench (Wu et al. 2025): each criterion is a separate single-turn request;
the judge first explains, then ends with ``Rating: [[N]]`` where N is 0, 1 or 2. The text being
rated is called a *fragment* because generation stops after a fixed number of tokens. The
concept prompt does not show the instruction, the fluency prompt shows neither. The wording is
this project's own.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal, get_args

Criterion = Literal["concept", "instruction", "fluency"]
CRITERIA: tuple[Criterion, ...] = get_args(Criterion)

_FORMAT = (
    "First write a short justification (two or three sentences). Then, on the last line, give "
    "your verdict in exactly this form: Rating: [[N]], where N is 0, 1 or 2."
)

CONCEPT_TEMPLATE = (
    "You are a careful, neutral evaluator. Below is a concept and a piece of text that may have "
    "been cut off in mid-sentence. Judge only how strongly the concept shows up in the text. "
    "Do not take grammar, style or coherence into account.\n\n"
    "Scale:\n"
    "0 - the concept does not appear in the text at all.\n"
    "1 - the concept appears, but only faintly, in passing, or in a forced way.\n"
    "2 - the concept is clearly present and woven naturally into the text.\n\n"
    "[Concept begins]\n{concept}\n[Concept ends]\n\n"
    "[Text fragment begins]\n{text}\n[Text fragment ends]\n\n" + _FORMAT
)

INSTRUCTION_TEMPLATE = (
    "You are a careful, neutral evaluator. Below is a request and a piece of text that may have "
    "been cut off in mid-sentence. Judge only whether the text is about what the request asks "
    "for, i.e. whether the two share a topic. Do not judge whether the request is fully "
    "answered, and ignore grammar, coherence and how informative the text is.\n\n"
    "Scale:\n"
    "0 - the text has nothing to do with the request.\n"
    "1 - the text touches on the request only loosely or indirectly.\n"
    "2 - the text clearly and directly addresses the request's topic.\n\n"
    "[Request begins]\n{instruction}\n[Request ends]\n\n"
    "[Text fragment begins]\n{text}\n[Text fragment ends]\n\n" + _FORMAT
)

FLUENCY_TEMPLATE = (
    "You are a careful, neutral evaluator. Below is a piece of text that may have been cut off "
    "in mid-sentence; being cut off is not a fault. Judge only how fluent the language is: look "
    "for unnatural wording, clumsy transitions, grammatical mistakes and repetition. Ignore "
    "whether it is complete, relevant or informative.\n\n"
    "Scale:\n"
    "0 - not fluent: hard to understand, broken, or stuck repeating itself.\n"
    "1 - readable, but with noticeable errors or awkward passages.\n"
    "2 - fluent, natural language with at most trivial slips.\n\n"
    "[Text fragment begins]\n{text}\n[Text fragment ends]\n\n" + _FORMAT
)

TEMPLATES: dict[Criterion, str] = {
    "concept": CONCEPT_TEMPLATE,
    "instruction": INSTRUCTION_TEMPLATE,
    "fluency": FLUENCY_TEMPLATE,
}


def templates_hash() -> str:
    """A short hash of the three templates, recorded with LLM-judge scores as provenance."""
    blob = "\x00".join(TEMPLATES[c] for c in CRITERIA).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def check_criterion(criterion: str) -> Criterion:
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    return criterion


def build_prompt(criterion: str, concept: str, instruction: str, text: str) -> str:
    """The user message asking for one criterion's rating."""
    template = TEMPLATES[check_criterion(criterion)]
    return template.format(concept=concept, instruction=instruction, text=text)


_STRIP = "[]*\"'`. \t"
_RATING = re.compile(r"rating\s*:", re.IGNORECASE)


def parse_rating(answer: str) -> int | None:
    """The rating in a judge's answer, or ``None`` when there is no valid one.

    Takes the text after the *last* ``Rating:``, keeps its first line, strips brackets, stars,
    quotes and a trailing period, and reads a number. Only 0, 1 and 2 are valid (``2.0`` is 2;
    ``1.5``, ``3`` or ``two`` are not).
    """
    matches = list(_RATING.finditer(answer))
    if not matches:
        return None
    rest = answer[matches[-1].end() :].strip()
    first = rest.splitlines()[0] if rest else ""
    value = first.strip(_STRIP)
    try:
        number = float(value)
    except ValueError:
        return None
    if number in (0.0, 1.0, 2.0):
        return int(number)
    return None
