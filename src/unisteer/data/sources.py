"""One entry point for every kind of source: ``load_pairs("default:optimism")``, a file, a
converter format, or a Hugging Face dataset."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unisteer.data.anthropic import read_advanced_ai_risk, read_persona
from unisteer.data.axbench import Responder, read_axbench
from unisteer.data.caa import read_caa_ab
from unisteer.data.default import default_dataset
from unisteer.data.pairs import PairSet
from unisteer.data.readers import read_hf_dataset, read_pairs
from unisteer.errors import DataError

FORMATS = ("auto", "pairs", "persona", "advanced-ai-risk", "caa-ab", "axbench", "hf")


def _sniff(path: Path) -> str:
    """Guess the converter from the first record of a JSON / JSONL file."""
    if path.suffix.lower() not in (".json", ".jsonl"):
        return "pairs"
    try:
        with path.open(encoding="utf-8", errors="replace") as f:  # the reader reports bad bytes
            head = f.read(65536)
    except OSError:
        return "pairs"  # the reader reports the error with the file name
    first: Any = None
    if path.suffix.lower() == ".jsonl":
        for line in head.splitlines():
            if line.strip():
                try:
                    first = json.loads(line)
                except json.JSONDecodeError:
                    return "pairs"
                break
    else:
        stripped = head.lstrip()
        if stripped.startswith("["):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                first = data[0] if isinstance(data, list) and data else None
            except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                return "pairs"
    if not isinstance(first, dict) or "answer_matching_behavior" not in first:
        return "pairs"
    if path.suffix.lower() == ".json":
        return "caa-ab"
    answer = str(first.get("answer_matching_behavior", "")).strip()
    return "persona" if answer in ("Yes", "No") else "advanced-ai-risk"


def load_pairs(
    source: str | Path,
    *,
    format: str = "auto",
    fields: Mapping[str, str] | None = None,
    invert: bool | None = None,
    strict: bool = True,
    respond: Responder | None = None,
    **kwargs: Any,
) -> PairSet:
    """Read pairs from ``source``.

    ``"default"`` or ``"default:CONCEPT"`` is the project's own dataset. Otherwise ``format``
    picks the reader (``auto`` looks at the suffix and the first record); ``invert`` sets
    the polarity of Anthropic / CAA multiple-choice files; ``axbench`` needs ``respond``, which
    gives the base model's responses used as negatives (see
    :func:`unisteer.generation.base_responder`).
    """
    if format not in FORMATS:
        raise DataError(f"unknown format {format!r}; expected one of {FORMATS}")
    text = str(source)
    if text == "default" or text.startswith("default:"):
        return default_dataset(text.partition(":")[2] or None)
    path = Path(text)
    fmt = format
    if fmt == "auto":
        fmt = "pairs" if path.is_dir() else _sniff(path)
    if fmt == "pairs":
        return read_pairs(path, fields=fields, strict=strict)
    if fmt == "hf":
        return read_hf_dataset(text, fields=fields, strict=strict, **kwargs)
    if fmt == "persona":
        return read_persona(path, strict=strict, **kwargs)
    if fmt == "advanced-ai-risk":
        return read_advanced_ai_risk(path, invert=invert, strict=strict)
    if fmt == "caa-ab":
        return read_caa_ab(path, invert=invert, strict=strict)
    if respond is None:
        raise DataError(
            "format 'axbench' needs the base model's responses as negatives: pass a model "
            "(e.g. --model) so they can be generated"
        )
    return read_axbench(path, respond, strict=strict, **kwargs)
