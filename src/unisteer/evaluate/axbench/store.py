"""Evaluation results on disk: Parquet parts written atomically, read back as one table.

An evaluation directory holds::

    run.json                                     settings per method, judges used
    generations/<method>/concept_<id>.parquet    one row per (concept, input_id, factor)
    ratings/<judge>/<method>/concept_<id>.parquet one row per generation and criterion

Each part is rewritten whole (temporary file + rename) after every chunk of work, so an
interrupted run leaves only complete parts, and a new run skips what they hold.

The deltas an evaluation reads are given in memory or as saved directories
(:data:`DeltaSource`, read by :func:`as_delta`).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from unisteer.core.delta import Delta
from unisteer.files import write_parquet_atomic, write_text_atomic

#: A delta in memory, or the directory (or ``delta.json``) it was saved to.
DeltaSource = Delta | str | Path

GENERATION_KEY = ["concept_id", "input_id", "factor"]
RATING_KEY = [*GENERATION_KEY, "criterion"]


def slug(name: str) -> str:
    """A file-name-safe form of a method or judge name (with a short hash if altered)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:60] or "x"
    if clean == name:
        return clean
    return f"{clean}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def as_delta(source: DeltaSource, model: Any, tokenizer: Any) -> Delta:
    """``source`` itself when it is a delta, else the delta saved there, loaded for ``model``
    (with :func:`unisteer.core.io.load_delta`'s fingerprint checks)."""
    if isinstance(source, Delta):
        return source
    from unisteer.core.io import load_delta

    return load_delta(source, model, tokenizer=tokenizer)


def _read_parts(directory: Path) -> pd.DataFrame:
    parts = sorted(directory.glob("concept_*.parquet")) if directory.is_dir() else []
    frames = [pd.read_parquet(p) for p in parts]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


class EvalStore:
    """Reads and writes one evaluation directory."""

    def __init__(self, directory: str | Path) -> None:
        self.root = Path(directory)

    # -- generations --------------------------------------------------------------------------

    def generation_part(self, method: str, concept_id: int) -> Path:
        return self.root / "generations" / slug(method) / f"concept_{concept_id:05d}.parquet"

    def generations(self, method: str | None = None, concept_id: int | None = None) -> pd.DataFrame:
        if method is not None and concept_id is not None:
            path = self.generation_part(method, concept_id)
            return pd.read_parquet(path) if path.is_file() else pd.DataFrame()
        base = self.root / "generations"
        dirs = [base / slug(method)] if method is not None else sorted(base.glob("*"))
        frames = [_read_parts(d) for d in dirs]
        frames = [f for f in frames if not f.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def write_generations(self, method: str, concept_id: int, frame: pd.DataFrame) -> None:
        ordered = frame.sort_values(GENERATION_KEY, kind="stable").reset_index(drop=True)
        write_parquet_atomic(self.generation_part(method, concept_id), ordered)

    # -- ratings ------------------------------------------------------------------------------

    def rating_part(self, judge: str, method: str, concept_id: int) -> Path:
        return (
            self.root / "ratings" / slug(judge) / slug(method) / f"concept_{concept_id:05d}.parquet"
        )

    def ratings(
        self, judge: str, method: str | None = None, concept_id: int | None = None
    ) -> pd.DataFrame:
        if method is not None and concept_id is not None:
            path = self.rating_part(judge, method, concept_id)
            return pd.read_parquet(path) if path.is_file() else pd.DataFrame()
        base = self.root / "ratings" / slug(judge)
        dirs = [base / slug(method)] if method is not None else sorted(base.glob("*"))
        frames = [_read_parts(d) for d in dirs]
        frames = [f for f in frames if not f.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def write_ratings(self, judge: str, method: str, concept_id: int, frame: pd.DataFrame) -> None:
        ordered = frame.sort_values(RATING_KEY, kind="stable").reset_index(drop=True)
        write_parquet_atomic(self.rating_part(judge, method, concept_id), ordered)

    # -- run metadata -------------------------------------------------------------------------

    def read_run(self) -> dict[str, Any]:
        path = self.root / "run.json"
        if not path.is_file():
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}

    def update_run(self, **sections: Any) -> dict[str, Any]:
        run = self.read_run()
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(run.get(key), dict):
                run[key] = {**run[key], **value}
            else:
                run[key] = value
        write_text_atomic(self.root / "run.json", json.dumps(run, indent=2, default=str) + "\n")
        return run
