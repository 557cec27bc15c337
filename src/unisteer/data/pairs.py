"""Polarity pairs: one query, a completion that shows the concept and one that does not."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from unisteer.data.conversation import Query, parse_query, query_json
from unisteer.data.problems import Problem
from unisteer.errors import DataError
from unisteer.files import write_text_atomic

#: The values ``meta["split"]`` may take.
SPLITS = ("train", "test")


@dataclass(frozen=True)
class PolarityPair:
    """``(query, positive, negative)``: A_p shows the concept, A_n its opposite or absence.

    ``meta`` holds anything else (concept name, source file and line, fixed split...).
    """

    query: Query  # one user message, or a conversation ending with a user turn
    positive: str
    negative: str
    id: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.query, str):
            try:
                object.__setattr__(self, "query", parse_query(self.query))
            except DataError as e:
                raise DataError(f"pair {self.id!r}: query: {e}") from None
        for name in ("positive", "negative", "id"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise DataError(
                    f"pair {self.id!r}: {name} must be a string, got {type(value).__name__}"
                )
        for name in ("positive", "negative"):
            if not getattr(self, name).strip():
                raise DataError(f"pair {self.id!r}: {name} completion is empty")

    @property
    def key(self) -> tuple[Query, str, str]:
        """What makes two pairs duplicates: the same query and the same two completions."""
        return (self.query, self.positive, self.negative)

    def problem(self, message: str) -> Problem:
        """A problem with this pair, placed at the file and line (row, item) it was read from
        when it was read from one: ``str()`` gives ``FILE:LINE: pair 'ID': message``."""
        text = f"pair {self.id!r}: {message}"
        source = self.meta.get("source")
        if not isinstance(source, str):
            return Problem("data", None, None, text)
        for unit in ("line", "row", "item"):
            at = self.meta.get(unit)
            if isinstance(at, int) and not isinstance(at, bool):
                return Problem(source, at, None, text, unit)
        return Problem(source, None, None, text)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "query": query_json(self.query),
            "positive": self.positive,
            "negative": self.negative,
        }
        if self.meta:
            out["meta"] = self.meta
        return out


class PairSet(Sequence[PolarityPair]):
    """An ordered collection of pairs with unique ids, and the problems met while reading it."""

    def __init__(
        self,
        pairs: Iterable[PolarityPair],
        *,
        name: str = "pairs",
        problems: Iterable[Problem] = (),
    ) -> None:
        self._pairs = list(pairs)
        self.name = name
        self.problems = list(problems)
        seen: dict[str, int] = {}
        for i, p in enumerate(self._pairs):
            if p.id in seen:
                raise DataError(f"{name}: duplicate pair id {p.id!r} (items {seen[p.id]} and {i})")
            seen[p.id] = i

    # -- Sequence ---------------------------------------------------------------------------

    @overload
    def __getitem__(self, index: int) -> PolarityPair: ...
    @overload
    def __getitem__(self, index: slice) -> PairSet: ...
    def __getitem__(self, index: int | slice) -> PolarityPair | PairSet:
        if isinstance(index, slice):
            return PairSet(self._pairs[index], name=self.name)
        return self._pairs[index]

    def __len__(self) -> int:
        return len(self._pairs)

    def __iter__(self) -> Iterator[PolarityPair]:
        return iter(self._pairs)

    def __repr__(self) -> str:
        extra = f", {len(self.problems)} problems" if self.problems else ""
        return f"PairSet({self.name!r}, {len(self)} pairs{extra})"

    # -- operations -------------------------------------------------------------------------

    def filter(self, keep: Callable[[PolarityPair], bool]) -> PairSet:
        return PairSet((p for p in self._pairs if keep(p)), name=self.name)

    def concat(self, *others: PairSet) -> PairSet:
        """All pairs, in order; ids must stay unique."""
        pairs = list(self._pairs)
        problems = list(self.problems)
        for o in others:
            pairs.extend(o)
            problems.extend(o.problems)
        name = "+".join([self.name, *(o.name for o in others)])
        return PairSet(pairs, name=name, problems=problems)

    def __add__(self, other: PairSet) -> PairSet:
        return self.concat(other)

    def split(self, test_size: float | int = 0.2, seed: int = 0) -> tuple[PairSet, PairSet]:
        """A seeded random ``(train, test)`` split; the same seed gives the same split.

        ``test_size`` is a fraction in (0, 1) or a number of pairs.
        """
        n = len(self._pairs)
        if isinstance(test_size, float):
            if not 0.0 < test_size < 1.0:
                raise ValueError(f"test_size as a fraction must be in (0, 1), got {test_size}")
            n_test = round(n * test_size)
        else:
            n_test = test_size
        if not 0 <= n_test <= n:
            raise ValueError(f"test_size {test_size} does not fit {n} pairs")
        order = list(range(n))
        random.Random(seed).shuffle(order)
        test_idx = set(order[:n_test])
        train = [p for i, p in enumerate(self._pairs) if i not in test_idx]
        test = [p for i, p in enumerate(self._pairs) if i in test_idx]
        return PairSet(train, name=f"{self.name}/train"), PairSet(test, name=f"{self.name}/test")

    def has_fixed_split(self, key: str = "split") -> bool:
        """Whether every pair records its split in ``meta[key]`` (``"train"`` / ``"test"``)."""
        return all(p.meta.get(key) in SPLITS for p in self._pairs)

    def train_test(self, test_size: float | int = 0.2, seed: int = 0) -> tuple[PairSet, PairSet]:
        """The split the data records (:meth:`fixed_split`) when every pair has one, else a
        seeded random split (:meth:`split`): the one rule every caller uses."""
        if self.has_fixed_split():
            return self.fixed_split()
        return self.split(test_size=test_size, seed=seed)

    def fixed_split(self, key: str = "split") -> tuple[PairSet, PairSet]:
        """The split recorded in each pair's ``meta[key]`` (``"train"`` / ``"test"``)."""
        missing = [p.id for p in self._pairs if p.meta.get(key) not in SPLITS]
        if missing:
            raise DataError(
                f"{self.name}: {len(missing)} pairs have no meta[{key!r}] of 'train' or 'test' "
                f"(first: {missing[0]!r}); use split() for a random split"
            )
        train = [p for p in self._pairs if p.meta[key] == "train"]
        test = [p for p in self._pairs if p.meta[key] == "test"]
        return PairSet(train, name=f"{self.name}/train"), PairSet(test, name=f"{self.name}/test")

    def to_jsonl(self, path: str | Path) -> Path:
        """Write one JSON object per line (id, query, positive, negative, meta), atomically."""
        lines = [json.dumps(p.to_dict(), ensure_ascii=False, sort_keys=True) for p in self._pairs]
        write_text_atomic(path, "".join(line + "\n" for line in lines))
        return Path(path)
