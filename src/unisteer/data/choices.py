"""Multiple-choice questions: find the options ``(A) ...``, ``(B) ...`` in a question text."""

from __future__ import annotations

import re

_OPTION = re.compile(r"^\s*\(([A-Z])\)[ \t]*(.*?)\s*$", re.MULTILINE)
_LETTER = re.compile(r"^\s*\(?([A-Z])\)?\s*$")


def parse_options(question: str) -> dict[str, str]:
    """``{"A": "option text", ...}`` for every line of the form ``(X) text``."""
    return {m.group(1): m.group(2) for m in _OPTION.finditer(question)}


def parse_letter(answer: str) -> str | None:
    """The letter in an answer like ``" (A)"``, ``"(B)"`` or ``"C"``, else ``None``."""
    m = _LETTER.match(answer)
    return m.group(1) if m else None


def answer_text(letter: str, options: dict[str, str]) -> str:
    """The completion for a chosen option: the letter in brackets and the option's text."""
    text = options[letter]
    return f"({letter}) {text}" if text else f"({letter})"


def strip_question_frame(question: str) -> str:
    """Remove the ``Question:`` prefix and ``Answer:`` suffix of the human-written files."""
    q = question.strip()
    if q.startswith("Question:"):
        q = q[len("Question:") :].lstrip()
    if q.endswith("Answer:"):
        q = q[: -len("Answer:")].rstrip()
    return q
