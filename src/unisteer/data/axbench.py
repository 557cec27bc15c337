"""Converter for AxBench concept data (Wu et al. 2025), e.g. ``concept10/<variant>/generate``.

AxBench's ``train_data.parquet`` has, per concept, instructions (``input``) with responses that
show the concept (``output``, ``category == "positive"``), and concept-free negatives that are
*not* answers to the same instructions. As RePS does, each positive is paired with the base
model's own response to the same instruction, which a *responder* supplies (this module
generates nothing: :func:`unisteer.generation.base_responder` generates them once, in batches,
and caches them on disk under the model's fingerprint).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from unisteer.data.pairs import PairSet
from unisteer.data.readers import pairs_from_rows
from unisteer.errors import DataError

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


def read_axbench(
    path: str | Path,
    respond: Responder,
    *,
    concept_ids: Sequence[int] | None = None,
    strict: bool = True,
) -> PairSet:
    """Pairs (instruction, concept response, base-model response) for each concept.

    ``respond(instructions)`` gives the base model's response to each instruction (e.g.
    :func:`unisteer.generation.base_responder`, which generates them once and caches them).
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
    responses = respond(instructions)
    if len(responses) != len(instructions):
        raise DataError(
            f"{source}: the responder gave {len(responses)} responses for "
            f"{len(instructions)} instructions"
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
