"""Reading polarity pairs from JSONL, JSON, CSV, Parquet and Hugging Face datasets.

Every reader maps source columns to the pair's fields with ``fields`` (our name → their
column; by default ``query``, ``positive``, ``negative`` and an optional ``id``), keeps the
other columns in ``meta``, and checks every row: a missing or non-string field, an empty
completion, a duplicated pair or id, a malformed line, or an unreadable file is reported with the
file, the line (or row) and the field. ``strict=True`` (default) raises
:class:`~unisteer.errors.DataError` at the first problem; ``strict=False`` skips the row and
records it in ``PairSet.problems``. Nothing is written.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from unisteer.data.conversation import parse_query
from unisteer.data.pairs import PairSet, PolarityPair
from unisteer.data.problems import Problem, ProblemLog
from unisteer.errors import DataError
from unisteer.files import json_safe

DEFAULT_FIELDS: dict[str, str] = {
    "query": "query",
    "positive": "positive",
    "negative": "negative",
    "id": "id",
}
_TEXT_FIELDS = ("query", "positive", "negative")

Row = tuple[int, Any]  # (line / row / item number, the parsed row)


def _field_map(fields: Mapping[str, str] | None) -> dict[str, str]:
    out = dict(DEFAULT_FIELDS)
    if fields:
        unknown = set(fields) - set(DEFAULT_FIELDS)
        if unknown:
            raise ValueError(
                f"fields maps our names {sorted(DEFAULT_FIELDS)} to your columns; unknown "
                f"names {sorted(unknown)}"
            )
        out.update(fields)
    return out


def _is_missing(value: Any) -> bool:
    """Absent, None, or a NaN that a table uses for an empty cell."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def pairs_from_rows(
    rows: Iterable[Row],
    source: str,
    *,
    fields: Mapping[str, str] | None = None,
    strict: bool = True,
    unit: str = "line",
    id_prefix: str | None = None,
) -> PairSet:
    """Validate parsed rows and turn them into a :class:`PairSet`."""
    fmap = _field_map(fields)
    log = ProblemLog(strict)
    prefix = id_prefix if id_prefix is not None else Path(source).stem
    pairs: list[PolarityPair] = []
    seen_keys: dict[tuple[Any, str, str], int] = {}
    seen_ids: dict[str, int] = {}

    def problem(line: int, field: str | None, message: str) -> None:
        log.report(Problem(source, line, field, message, unit))

    seen_any = False
    for line, row in rows:
        seen_any = True
        if isinstance(row, Problem):
            log.report(row)
            continue
        if not isinstance(row, Mapping):
            problem(line, None, f"expected an object with fields, got {type(row).__name__}")
            continue
        values: dict[str, Any] = {}
        bad = False
        for name in _TEXT_FIELDS:
            column = fmap[name]
            if _is_missing(row.get(column)):
                problem(line, column, "missing")
                bad = True
                break
            value = row[column]
            if name == "query" and not isinstance(value, str) and hasattr(value, "tolist"):
                value = value.tolist()  # a Parquet list column arrives as an array
            if name == "query" and isinstance(value, list):  # a conversation
                try:
                    values[name] = parse_query(value)
                except DataError as e:
                    problem(line, column, str(e))
                    bad = True
                    break
                continue
            if not isinstance(value, str):
                problem(line, column, f"must be a string, got {type(value).__name__}")
                bad = True
                break
            if not value.strip():
                what = "empty completion" if name != "query" else "empty query"
                problem(line, column, what)
                bad = True
                break
            values[name] = value
        if bad:
            continue
        id_column = fmap["id"]
        raw_id = row.get(id_column)
        if raw_id is None:
            pair_id = f"{prefix}-{line}"
        elif isinstance(raw_id, str | int) and not isinstance(raw_id, bool) and str(raw_id).strip():
            pair_id = str(raw_id)
        else:
            problem(line, id_column, f"must be a non-empty string or integer, got {raw_id!r}")
            continue
        key = (values["query"], values["positive"], values["negative"])
        if key in seen_keys:
            problem(line, None, f"duplicate pair (same as {unit} {seen_keys[key]})")
            continue
        if pair_id in seen_ids:
            problem(
                line, id_column, f"duplicate id {pair_id!r} (first at {unit} {seen_ids[pair_id]})"
            )
            continue
        used = {fmap[n] for n in (*_TEXT_FIELDS, "id")}
        meta = {str(k): json_safe(v) for k, v in row.items() if k not in used}
        nested = meta.pop("meta", None)  # what PairSet.to_jsonl writes
        if isinstance(nested, dict):
            meta = {**nested, **meta}
        elif nested is not None:
            meta["meta"] = nested
        meta["source"] = source
        meta[unit] = line
        seen_keys[key] = line
        seen_ids[pair_id] = line
        pairs.append(PolarityPair(**values, id=pair_id, meta=meta))
    if not seen_any and strict:
        raise DataError(f"{source}: no pairs (the file holds no {unit}s)")
    return PairSet(pairs, name=Path(source).stem, problems=log.problems)


def _open_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 ({e.reason})") from e


def _jsonl_rows(path: Path) -> Iterator[Row | tuple[int, Problem]]:
    text = _open_text(path)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as e:
            yield number, Problem(str(path), number, None, f"not valid JSON ({e.msg})")


def read_jsonl(
    path: str | Path, *, fields: Mapping[str, str] | None = None, strict: bool = True
) -> PairSet:
    """One JSON object per line; blank lines are ignored."""
    p = Path(path)
    return pairs_from_rows(_jsonl_rows(p), str(p), fields=fields, strict=strict)


def read_json(
    path: str | Path, *, fields: Mapping[str, str] | None = None, strict: bool = True
) -> PairSet:
    """A JSON array of objects (as in CAA's files); rows are numbered as items from 1."""
    p = Path(path)
    text = _open_text(p)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{p}:{e.lineno}: not valid JSON ({e.msg})") from e
    if not isinstance(data, list):
        raise DataError(f"{p}: expected a JSON array of objects, got {type(data).__name__}")
    return pairs_from_rows(
        enumerate(data, start=1), str(p), fields=fields, strict=strict, unit="item"
    )


def read_csv(
    path: str | Path, *, fields: Mapping[str, str] | None = None, strict: bool = True
) -> PairSet:
    """A CSV file with a header row; line numbers are those of the file (quoted newlines too)."""
    p = Path(path)
    text = _open_text(p)
    log_rows: list[Row] = []
    reader = csv.reader(text.splitlines(keepends=True))
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{p}: empty CSV file (no header row)") from None
    except csv.Error as e:
        raise DataError(f"{p}:1: malformed CSV header ({e})") from e
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            log_rows.append(
                (reader.line_num, Problem(str(p), reader.line_num, None, f"malformed CSV ({e})"))
            )
            continue
        if not any(v.strip() for v in values):
            continue
        line = reader.line_num
        if len(values) != len(header):
            log_rows.append(
                (
                    line,
                    Problem(
                        str(p),
                        line,
                        None,
                        f"has {len(values)} fields, the header has {len(header)}",
                    ),
                )
            )
            continue
        log_rows.append((line, dict(zip(header, values, strict=True))))
    return pairs_from_rows(log_rows, str(p), fields=fields, strict=strict)


def _frame_rows(frame: Any) -> Iterator[Row]:
    yield from enumerate(frame.to_dict(orient="records"), start=1)


def read_parquet(
    path: str | Path, *, fields: Mapping[str, str] | None = None, strict: bool = True
) -> PairSet:
    """A Parquet table; rows are numbered from 1."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise DataError(f"cannot read {p}: no such file")
    try:
        frame = pd.read_parquet(p)
    except Exception as e:  # pyarrow raises many types for a damaged file
        raise DataError(f"cannot read {p} as Parquet: {e}") from e
    return pairs_from_rows(_frame_rows(frame), str(p), fields=fields, strict=strict, unit="row")


def read_hf_dataset(
    name_or_path: str | Path,
    *,
    split: str = "train",
    fields: Mapping[str, str] | None = None,
    strict: bool = True,
) -> PairSet:
    """A Hugging Face ``datasets`` dataset: a directory from ``save_to_disk``, or an id / path
    that ``datasets.load_dataset`` understands (offline, it must be in the local cache)."""
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"reading {name_or_path} needs the 'datasets' package: pip install datasets"
        ) from None

    source = str(name_or_path)
    p = Path(source)
    try:
        if p.is_dir() and _is_saved_dataset(p):
            ds = datasets.load_from_disk(source)
        else:
            ds = datasets.load_dataset(source, split=split)
    except Exception as e:
        raise DataError(f"cannot load the Hugging Face dataset {source!r}: {e}") from e
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"{source}: no split {split!r} (has {sorted(ds)})")
        ds = ds[split]
    rows = ((i, dict(r)) for i, r in enumerate(ds, start=1))
    return pairs_from_rows(
        rows,
        f"{source}[{split}]",
        fields=fields,
        strict=strict,
        unit="row",
        id_prefix=p.name or source,
    )


def _is_saved_dataset(p: Path) -> bool:
    """Whether directory ``p`` was written by ``datasets``' ``save_to_disk``."""
    return (p / "dataset_info.json").is_file() or (p / "dataset_dict.json").is_file()


READERS = {
    ".jsonl": read_jsonl,
    ".ndjson": read_jsonl,
    ".json": read_json,
    ".csv": read_csv,
    ".parquet": read_parquet,
    ".pq": read_parquet,
}


def read_pairs(
    path: str | Path, *, fields: Mapping[str, str] | None = None, strict: bool = True
) -> PairSet:
    """Read pairs from a file, choosing the reader by its suffix, or a saved HF dataset dir."""
    p = Path(path)
    if p.is_dir():
        if not _is_saved_dataset(p):
            raise DataError(
                f"{p} is a directory, not a data file: give a .jsonl, .json, .csv or .parquet "
                "file, or a directory written by datasets' save_to_disk (it holds "
                "dataset_info.json or dataset_dict.json)"
            )
        return read_hf_dataset(p, fields=fields, strict=strict)
    reader = READERS.get(p.suffix.lower())
    if reader is None:
        raise DataError(
            f"{p}: unknown file type {p.suffix!r}; expected one of {sorted(READERS)} or a "
            "directory saved with datasets.save_to_disk"
        )
    return reader(p, fields=fields, strict=strict)
