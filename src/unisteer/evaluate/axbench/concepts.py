"""AxBench concept data for evaluation: the concept list, training rows and detection-eval rows.

A concept directory is laid out as AxBench's (``concept10/prod_2b_l10_v1``)::

    generate/metadata.jsonl                one line per concept: concept_id, concept, ...
    generate/train_data.parquet            input, output, output_concept, category, concept_id
    inference/latent_eval_data.parquet     the same columns; category also "hard negative"

Any of these paths (the directory, ``generate/`` or the training Parquet file) may be given.
Without ``metadata.jsonl`` the concepts are read from the training positives.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from unisteer.data.axbench import read_axbench_frame
from unisteer.errors import DataError


@dataclass(frozen=True)
class Concept:
    """One concept: its id, its description (what the judge is shown) and its genre."""

    concept_id: int
    concept: str
    genre: str | None = None


def _root(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file():
        p = p.parent
    return p.parent if p.name in ("generate", "inference") else p


def train_path(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    for candidate in (p / "generate" / "train_data.parquet", p / "train_data.parquet"):
        if candidate.is_file():
            return candidate
    raise DataError(f"no AxBench training data (generate/train_data.parquet) under {p}")


def eval_path(path: str | Path) -> Path:
    root = _root(path)
    candidate = root / "inference" / "latent_eval_data.parquet"
    if not candidate.is_file():
        raise DataError(f"no AxBench eval data ({candidate}) for {path}")
    return candidate


def read_train_frame(path: str | Path) -> pd.DataFrame:
    frame: pd.DataFrame = read_axbench_frame(train_path(path))
    return frame


def read_eval_frame(path: str | Path) -> pd.DataFrame:
    frame: pd.DataFrame = read_axbench_frame(eval_path(path))
    return frame


def read_concepts(path: str | Path) -> list[Concept]:
    """The concepts, ordered by id: from ``metadata.jsonl`` if present, else the training data."""
    root = _root(path)
    train = read_train_frame(path)
    genres = _genres(train)
    meta = root / "generate" / "metadata.jsonl"
    if meta.is_file():
        out = []
        for number, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row: dict[str, Any] = json.loads(line)
                cid, text = int(row["concept_id"]), str(row["concept"])
            except (ValueError, KeyError, TypeError) as e:
                raise DataError(f"{meta}:{number}: bad concept line ({e})") from None
            out.append(Concept(cid, text, genres.get(cid)))
        return sorted(out, key=lambda c: c.concept_id)
    pos = train[(train["category"] == "positive") & (train["concept_id"] >= 0)]
    first = pos.groupby("concept_id", sort=True)["output_concept"].first()
    return [Concept(int(cid), str(text), genres.get(int(cid))) for cid, text in first.items()]


def resolve_concept(key: str | int, concepts: Sequence[Concept]) -> Concept:
    """The concept a key names: an id (``3``, ``"3"``, ``"concept_3"``) or a description."""
    by_id = {c.concept_id: c for c in concepts}
    text = str(key).strip()
    digits = text.removeprefix("concept").lstrip("_-")
    if digits.lstrip("-").isdigit() and int(digits) in by_id:
        return by_id[int(digits)]
    for c in concepts:
        if c.concept == text:
            return c
    raise DataError(
        f"no concept {key!r} in the concept data (ids {sorted(by_id)[:10]}...); key deltas "
        "by concept id or description"
    )


def _genres(frame: pd.DataFrame) -> dict[int, str]:
    if "concept_genre" not in frame.columns:
        return {}
    pos = frame[(frame["category"] == "positive") & (frame["concept_id"] >= 0)]
    first = pos.groupby("concept_id", sort=True)["concept_genre"].first()
    return {int(k): str(v) for k, v in first.items()}
