"""Converters for Anthropic's model-written evaluations (Perez et al. 2022).

* **persona** files (``persona/*.jsonl``): a statement to agree with; answers " Yes"/" No".
  The pair is (question, matching answer, non-matching answer), e.g. ``"Yes"`` vs ``"No"``.
* **advanced-ai-risk** files: multiple-choice questions. The completion is the letter plus that
  option's text, e.g. ``"(A) Yes, I agree ..."``, so the model scores real language.

**Polarity is explicit per file.** In the human-written power-seeking, wealth-seeking and
survival-instinct files ``answer_matching_behavior`` is the *safe* answer (checked by reading
rows; see ``../shared/data/README.md``), so for those the converter swaps the answers so that
the positive completion shows the behaviour named by the file. The LM-written files are oriented
as named. For any other advanced-ai-risk file, pass ``invert=`` yourself after reading a few rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from unisteer.data.choices import answer_text, parse_letter, parse_options, strip_question_frame
from unisteer.data.pairs import PairSet
from unisteer.data.problems import Problem
from unisteer.data.readers import _jsonl_rows, pairs_from_rows
from unisteer.errors import DataError

#: (generator folder, file stem) -> whether ``answer_matching_behavior`` must be swapped so that
#: the positive completion shows the behaviour the file is named after.
ADVANCED_AI_RISK_INVERTED: dict[tuple[str, str], bool] = {
    ("human_generated_evals", "power-seeking-inclination"): True,
    ("human_generated_evals", "wealth-seeking-inclination"): True,
    ("human_generated_evals", "survival-instinct"): True,
    ("lm_generated_evals", "power-seeking-inclination"): False,
    ("lm_generated_evals", "wealth-seeking-inclination"): False,
    ("lm_generated_evals", "survival-instinct"): False,
}


def _polarity(path: Path, invert: bool | None) -> bool:
    if invert is not None:
        return invert
    key = (path.parent.name, path.stem)
    if key in ADVANCED_AI_RISK_INVERTED:
        return ADVANCED_AI_RISK_INVERTED[key]
    raise DataError(
        f"{path}: the polarity of this file is not known to unisteer. Read a few rows and pass "
        "invert=True if answer_matching_behavior is the answer *without* the behaviour named "
        "by the file, else invert=False (on the command line: --invert / --no-invert)."
    )


def read_persona(
    path: str | Path,
    *,
    min_confidence: float | None = None,
    answer_instruction: str | None = None,
    strict: bool = True,
) -> PairSet:
    """A persona file: query = question (plus ``answer_instruction`` if given), positive =
    the answer matching the persona ("Yes" or "No"), negative = the other answer.

    ``min_confidence`` keeps rows whose ``label_confidence`` is at least that value.
    """
    p = Path(path)

    def rows() -> Iterator[tuple[int, Any]]:
        for line, row in _jsonl_rows(p):
            if isinstance(row, dict):
                conf = row.get("label_confidence")
                too_unsure = isinstance(conf, int | float) and (
                    min_confidence is not None and conf < min_confidence
                )
                if too_unsure:
                    continue
                row = dict(row)
                for key in ("answer_matching_behavior", "answer_not_matching_behavior"):
                    if isinstance(row.get(key), str):
                        row[key] = row[key].strip()
                if answer_instruction and isinstance(row.get("question"), str):
                    row["question"] = f"{row['question']}\n\n{answer_instruction}"
                row.setdefault("behavior", p.stem)
            yield line, row

    return pairs_from_rows(
        rows(),
        str(p),
        fields={
            "query": "question",
            "positive": "answer_matching_behavior",
            "negative": "answer_not_matching_behavior",
        },
        strict=strict,
    )


def ab_rows(
    rows: Iterator[tuple[int, Any]], source: str, invert: bool, unit: str
) -> Iterator[tuple[int, Any]]:
    """Turn multiple-choice rows into rows with ``query``/``positive``/``negative`` text."""
    for line, row in rows:
        if not isinstance(row, dict):
            yield line, row
            continue
        out: dict[str, Any] = {}
        question = row.get("question")
        if not isinstance(question, str):
            yield line, Problem(source, line, "question", "missing or not a string", unit)
            continue
        options = parse_options(question)
        letters: dict[str, str] = {}
        bad = None
        for key in ("answer_matching_behavior", "answer_not_matching_behavior"):
            value = row.get(key)
            if isinstance(value, list) and value:
                value = value[0]
            letter = parse_letter(value) if isinstance(value, str) else None
            if letter is None:
                bad = Problem(
                    source, line, key, f"expected a letter like ' (A)', got {value!r}", unit
                )
                break
            if letter not in options:
                bad = Problem(
                    source,
                    line,
                    key,
                    f"option ({letter}) is not among the choices {sorted(options)}",
                    unit,
                )
                break
            letters[key] = letter
        if bad is not None:
            yield line, bad
            continue
        matching = answer_text(letters["answer_matching_behavior"], options)
        other = answer_text(letters["answer_not_matching_behavior"], options)
        out["query"] = strip_question_frame(question)
        out["positive"], out["negative"] = (other, matching) if invert else (matching, other)
        out["inverted"] = invert
        for k, v in row.items():
            if k not in ("question", "answer_matching_behavior", "answer_not_matching_behavior"):
                out[k] = v
        yield line, out


def read_advanced_ai_risk(
    path: str | Path, *, invert: bool | None = None, strict: bool = True
) -> PairSet:
    """An advanced-ai-risk file (human- or LM-written); see the module docs for polarity."""
    p = Path(path)
    flip = _polarity(p, invert)
    rows = ab_rows(_jsonl_rows(p), str(p), flip, "line")
    return pairs_from_rows(rows, str(p), strict=strict)


def read_anthropic(path: str | Path, **kwargs: Any) -> PairSet:
    """Either kind of Anthropic file, told apart by its first row's answers."""
    p = Path(path)
    for _, row in _jsonl_rows(p):
        if isinstance(row, dict):
            answer = str(row.get("answer_matching_behavior", "")).strip()
            if answer in ("Yes", "No"):
                return read_persona(p, **kwargs)
            return read_advanced_ai_risk(p, **kwargs)
        break
    raise DataError(f"{p}: no JSON object on its first non-empty line")
