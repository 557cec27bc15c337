"""Converter for AxBench concept data (Wu et al. 2025), e.g. ``concept10/<variant>/generate``.

AxBench's ``train_data.parquet`` has, per concept, instructions (``input``) with responses that
show the concept (``output``, ``category == "positive"``), and concept-free negatives that are
*not* answers to the same instructions. As RePS does, each positive is paired with the base
model's own response to the same instruction. Those responses are generated once, in batches,
and cached on disk under the model's fingerprint, keyed by instruction and generation
settings: a second call generates nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from unisteer.atomic import write_text_atomic
from unisteer.data.pairs import PairSet
from unisteer.data.readers import pairs_from_rows
from unisteer.errors import DataError
from unisteer.fingerprint import model_fingerprint

_COLUMNS = ("input", "output", "output_concept", "category", "concept_id")

Responder = Callable[[Sequence[str]], list[str]]


def read_axbench_frame(path: str | Path) -> Any:
    """The AxBench parquet table, with its columns checked."""
    import pandas as pd

    p = Path(path)
    if p.is_dir():
        p = p / "train_data.parquet"
    if not p.is_file():
        raise DataError(f"cannot read {p}: no such file")
    try:
        frame = pd.read_parquet(p)
    except Exception as e:
        raise DataError(f"cannot read {p} as Parquet: {e}") from e
    missing = [c for c in _COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{p}: not AxBench concept data, missing columns {missing}")
    frame.attrs["source"] = str(p)
    return frame


class ResponseCache:
    """Base-model responses on disk: one JSON file per model fingerprint, written atomically."""

    def __init__(self, directory: Path, model_key: str, settings: dict[str, Any]) -> None:
        self.path = directory / f"{model_key}.json"
        self.settings = settings
        self._entries: dict[str, str] = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                self._entries = {str(k): str(v) for k, v in data.get("responses", {}).items()}
            except (OSError, ValueError, AttributeError):
                self._entries = {}  # unreadable cache: regenerate rather than fail

    def key(self, instruction: str) -> str:
        blob = json.dumps([instruction, self.settings], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def get(self, instruction: str) -> str | None:
        return self._entries.get(self.key(instruction))

    def put_many(self, items: dict[str, str]) -> None:
        for instruction, response in items.items():
            self._entries[self.key(instruction)] = response
        write_text_atomic(
            self.path, json.dumps({"settings": self.settings, "responses": self._entries})
        )


def base_responses(
    model: Any,
    tokenizer: Any,
    instructions: Sequence[str],
    *,
    cache_dir: str | Path | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    progress: bool = True,
) -> list[str]:
    """The unsteered model's greedy responses, from the cache where possible."""
    from unisteer.generate import generate_text
    from unisteer.models import cache_root

    fp = model_fingerprint(model, tokenizer)
    settings = {"max_new_tokens": max_new_tokens, "decoding": "greedy"}
    directory = Path(cache_dir) if cache_dir is not None else cache_root() / "responses"
    cache = ResponseCache(directory, f"{fp['config']}-{fp['tokenizer']}", settings)
    todo = list(dict.fromkeys(i for i in instructions if cache.get(i) is None))
    for start in range(0, len(todo), batch_size * 4):
        chunk = todo[start : start + batch_size * 4]
        texts = generate_text(
            model,
            tokenizer,
            chunk,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            progress=progress,
        )
        cache.put_many(dict(zip(chunk, texts, strict=True)))  # saved as we go: resumable
    out = []
    for i in instructions:
        response = cache.get(i)
        assert response is not None
        out.append(response)
    return out


def read_axbench(
    path: str | Path,
    model: Any,
    tokenizer: Any,
    *,
    concept_ids: Sequence[int] | None = None,
    cache_dir: str | Path | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    strict: bool = True,
    progress: bool = True,
) -> PairSet:
    """Pairs (instruction, concept response, base-model response) for each concept.

    ``concept_ids`` selects concepts (default: all). ``meta`` holds ``concept``,
    ``concept_id`` and ``concept_genre``.
    """
    frame = read_axbench_frame(path)
    source = frame.attrs["source"]
    pos = frame[(frame["category"] == "positive") & (frame["concept_id"] >= 0)]
    if concept_ids is not None:
        unknown = sorted(set(concept_ids) - set(int(c) for c in pos["concept_id"].unique()))
        if unknown:
            raise DataError(f"{source}: no concept ids {unknown}")
        pos = pos[pos["concept_id"].isin(list(concept_ids))]
    instructions = [str(x) for x in pos["input"].tolist()]
    responses = base_responses(
        model,
        tokenizer,
        instructions,
        cache_dir=cache_dir,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=progress,
    )
    rows = []
    for (index, r), negative in zip(pos.iterrows(), responses, strict=True):
        row = int(index) + 1
        rows.append(
            (
                row,
                {
                    "query": r["input"],
                    "positive": r["output"],
                    "negative": negative,
                    "id": f"axbench-{int(r['concept_id'])}-{row}",
                    "concept": r["output_concept"],
                    "concept_id": int(r["concept_id"]),
                    "concept_genre": r.get("concept_genre"),
                },
            )
        )
    return pairs_from_rows(rows, source, strict=strict, unit="row")
