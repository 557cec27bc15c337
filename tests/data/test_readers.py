"""Readers: the same pairs from every format; bad input named by file, line and field."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unisteer.data import (
    PairSet,
    PolarityPair,
    read_csv,
    read_hf_dataset,
    read_jsonl,
    read_pairs,
    read_parquet,
)
from unisteer.errors import DataError

ROWS = [
    {"question": "Q1?", "good": "Yes, gladly.", "bad": "No, never.", "topic": "a"},
    {"question": "Q2?", "good": "Sure thing.", "bad": "Not at all.", "topic": "b"},
    {"question": "Q3?", "good": "Of course.", "bad": "Certainly not.", "topic": "c"},
]
FIELDS = {"query": "question", "positive": "good", "negative": "bad"}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_every_format_gives_the_same_pairs(tmp_path: Path) -> None:
    import datasets

    frame = pd.DataFrame(ROWS)
    frame.to_parquet(tmp_path / "p.parquet")
    datasets.Dataset.from_pandas(frame).save_to_disk(str(tmp_path / "hf"))
    sets = [
        read_jsonl(write_jsonl(tmp_path / "p.jsonl", ROWS), fields=FIELDS),
        read_csv(write_csv(tmp_path / "p.csv", ROWS), fields=FIELDS),
        read_parquet(tmp_path / "p.parquet", fields=FIELDS),
        read_hf_dataset(tmp_path / "hf", fields=FIELDS),
        read_pairs(tmp_path / "hf", fields=FIELDS),
    ]
    for s in sets:
        assert [(p.query, p.positive, p.negative) for p in s] == [
            (r["question"], r["good"], r["bad"]) for r in ROWS
        ]
        assert [p.meta["topic"] for p in s] == ["a", "b", "c"]
    assert [p.id for p in sets[0]] == ["p-1", "p-2", "p-3"]
    assert sets[1][1].meta["line"] == 3  # CSV: line 1 is the header


def test_split_filter_concat_and_export(tmp_path: Path) -> None:
    pairs = PairSet(
        [PolarityPair(f"q{i}", "yes", "no", id=f"id{i}", meta={"n": i}) for i in range(50)]
    )
    train, test = pairs.split(0.2, seed=3)
    again = pairs.split(0.2, seed=3)
    assert [p.id for p in test] == [p.id for p in again[1]]
    assert len(test) == 10 and len(train) == 40
    assert {p.id for p in train} | {p.id for p in test} == {p.id for p in pairs}
    assert [p.id for p in pairs.split(0.2, seed=4)[1]] != [p.id for p in test]
    assert len(pairs.filter(lambda p: p.meta["n"] % 2 == 0)) == 25
    with pytest.raises(DataError, match="duplicate pair id 'id0'"):
        pairs.concat(pairs)
    out = pairs[:5].to_jsonl(tmp_path / "o.jsonl")
    back = read_jsonl(out)
    assert [(p.id, p.query, p.positive, p.negative) for p in back] == [
        (p.id, p.query, p.positive, p.negative) for p in pairs[:5]
    ]
    assert [p.meta["n"] for p in back] == [0, 1, 2, 3, 4]
    with pytest.raises(DataError, match="no meta\\['split'\\]"):
        pairs.fixed_split()


BAD_JSONL = [
    ('{"query": "q", "positive": "a", "negative": "b"}', None),
    ('{"query": "q", "positive": "a"}', r"bad\.jsonl:2: field 'negative': missing"),
    (
        '{"query": "q", "positive": 3, "negative": "b"}',
        r"bad\.jsonl:3: field 'positive': must be a string, got int",
    ),
    (
        '{"query": "q2", "positive": "  ", "negative": "b"}',
        r"bad\.jsonl:4: field 'positive': empty completion",
    ),
    (
        '{"query": "q", "positive": "a", "negative": "b"}',
        r"bad\.jsonl:5: duplicate pair \(same as line 1\)",
    ),
    ("{not json", r"bad\.jsonl:6: not valid JSON"),
    ('["a list"]', r"bad\.jsonl:7: expected an object"),
    (
        '{"query": "", "positive": "a", "negative": "b"}',
        r"bad\.jsonl:8: field 'query': empty query",
    ),
    ('{"id": "x", "query": "q3", "positive": "a", "negative": "b"}', None),
    (
        '{"id": "x", "query": "q4", "positive": "a", "negative": "b"}',
        r"bad\.jsonl:10: field 'id': duplicate id 'x'",
    ),
]


def test_each_bad_row_is_named_and_lenient_mode_counts_them(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(line for line, _ in BAD_JSONL) + "\n")
    for upto, (_, message) in enumerate(BAD_JSONL):
        if message is None:
            continue
        prefix = tmp_path / f"prefix{upto}.jsonl"
        # Earlier bad lines become blank (still counted as lines), good ones stay.
        lines = [line if m is None else "" for line, m in BAD_JSONL[:upto]]
        lines.append(BAD_JSONL[upto][0])
        prefix.write_text("\n".join(lines) + "\n")
        with pytest.raises(DataError, match=message.replace("bad", f"prefix{upto}")):
            read_jsonl(prefix)
    lenient = read_jsonl(path, strict=False)
    assert [p.id for p in lenient] == ["bad-1", "x"]
    assert len(lenient.problems) == sum(1 for _, m in BAD_JSONL if m is not None)
    assert [p.line for p in lenient.problems] == [2, 3, 4, 5, 6, 7, 8, 10]


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cannot read .*missing\.jsonl"):
        read_jsonl(tmp_path / "missing.jsonl")
    (tmp_path / "latin.jsonl").write_bytes(b'{"query": "ok"}\n{"query": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin\.jsonl:2: not valid UTF-8"):
        read_jsonl(tmp_path / "latin.jsonl")
    (tmp_path / "x.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"cannot read .*x\.parquet as Parquet"):
        read_parquet(tmp_path / "x.parquet")
    with pytest.raises(DataError, match=r"unknown file type '\.txt'"):
        read_pairs(tmp_path / "x.txt")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty CSV file"):
        read_csv(tmp_path / "empty.csv")
    with pytest.raises(DataError, match="cannot load the Hugging Face dataset"):
        read_hf_dataset(tmp_path / "no-such-dataset")


def test_csv_line_numbers_follow_quoted_newlines(tmp_path: Path) -> None:
    path = tmp_path / "multi.csv"
    path.write_text('query,positive,negative\n"line one\nline two",yes,no\nq2,,no\nq3,yes\n')
    with pytest.raises(DataError, match=r"multi\.csv:4: field 'positive': empty completion"):
        read_csv(path)
    lenient = read_csv(path, strict=False)
    assert len(lenient) == 1 and lenient[0].query == "line one\nline two"
    assert [str(p) for p in lenient.problems][1].endswith(
        "multi.csv:5: has 2 fields, the header has 3"
    )


def test_parquet_rows_are_numbered(tmp_path: Path) -> None:
    pd.DataFrame(
        {"query": ["a", "b"], "positive": ["yes", None], "negative": ["no", "no"]}
    ).to_parquet(tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"t\.parquet row 2: field 'positive': missing"):
        read_parquet(tmp_path / "t.parquet")


junk_values = st.one_of(
    st.text(max_size=12),
    st.integers(),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True),
    st.lists(st.integers(), max_size=2),
)
junk_rows = st.lists(
    st.one_of(
        st.dictionaries(st.sampled_from(["query", "positive", "negative", "id", "x"]), junk_values),
        junk_values,
    ),
    max_size=8,
)


def _check(result: PairSet | None, n_rows: int | None) -> None:
    if result is None:
        return
    for p in result:
        assert isinstance(p.query, str) and p.query.strip()
        assert p.positive.strip() and p.negative.strip()
    assert len({p.key for p in result}) == len(result)
    if n_rows is not None:
        assert len(result) + len(result.problems) == n_rows


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=junk_rows)
def test_jsonl_reader_survives_garbage(tmp_path: Path, rows: list[Any]) -> None:
    path = tmp_path / "junk.jsonl"
    lines = [json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    try:
        _check(read_jsonl(path), None)
    except DataError as e:
        assert "junk.jsonl:" in str(e)
    nonblank = sum(1 for line in lines if line.strip())
    _check(read_jsonl(path, strict=False), nonblank)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(alphabet=st.sampled_from(list('ab,"\n\r q;\\')), max_size=80))
def test_csv_reader_survives_garbage(tmp_path: Path, text: str) -> None:
    path = tmp_path / "junk.csv"
    path.write_text("query,positive,negative\n" + text, newline="")
    try:
        _check(read_csv(path), None)
    except DataError as e:
        assert "junk.csv" in str(e)
    _check(read_csv(path, strict=False), None)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {"query": junk_values, "positive": junk_values, "negative": junk_values}
        ),
        min_size=1,
        max_size=6,
    )
)
def test_parquet_reader_survives_garbage(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    path = tmp_path / "junk.parquet"
    frame = pd.DataFrame(
        {k: pd.Series([r[k] for r in rows], dtype=object).astype(str) for k in rows[0]}
    )
    frame.to_parquet(path)
    try:
        _check(read_parquet(path), None)
    except DataError as e:
        assert "junk.parquet row" in str(e)
    _check(read_parquet(path, strict=False), len(rows))
