"""Summaries of a pair set: counts, lengths, balance, examples and problems."""

from __future__ import annotations

import statistics
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from unisteer.data.conversation import parse_query, query_text
from unisteer.data.pairs import PairSet


@dataclass
class LengthStats:
    mean: float
    median: float
    minimum: int
    maximum: int

    @classmethod
    def of(cls, values: list[int]) -> LengthStats:
        if not values:
            return cls(0.0, 0.0, 0, 0)
        return cls(statistics.fmean(values), statistics.median(values), min(values), max(values))

    def __str__(self) -> str:
        return (
            f"mean {self.mean:7.1f}  median {self.median:6.1f}  "
            f"min {self.minimum:5d}  max {self.maximum:5d}"
        )


@dataclass
class Summary:
    name: str
    count: int
    splits: dict[str, int]
    lengths: dict[str, dict[str, LengthStats]]  # unit ("words"/"tokens") -> field -> stats
    balance: dict[str, float]  # unit -> mean(negative) / mean(positive)
    examples: list[dict[str, Any]]
    problems: list[str] = field(default_factory=list)


def summarize(pairs: PairSet, tokenizer: Any | None = None, examples: int = 3) -> Summary:
    """Counts and length statistics (words, and tokens when a tokenizer is given)."""
    units: dict[str, Any] = {"words": lambda s: len(s.split())}
    if tokenizer is not None:
        units["tokens"] = lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"])
    lengths: dict[str, dict[str, LengthStats]] = {}
    balance: dict[str, float] = {}
    for unit, count in units.items():
        per_field = {
            f: LengthStats.of([count(query_text(getattr(p, f))) for p in pairs])
            for f in ("query", "positive", "negative")
        }
        lengths[unit] = per_field
        if per_field["positive"].mean > 0:
            balance[unit] = per_field["negative"].mean / per_field["positive"].mean
    splits = Counter(str(p.meta.get("split", "-")) for p in pairs)
    return Summary(
        name=pairs.name,
        count=len(pairs),
        splits=dict(splits) if set(splits) != {"-"} else {},
        lengths=lengths,
        balance=balance,
        examples=[p.to_dict() for p in list(pairs)[:examples]],
        problems=[str(p) for p in pairs.problems],
    )


def format_summary(s: Summary, max_problems: int = 20) -> str:
    lines = [f"{s.name}: {s.count} pairs"]
    if s.splits:
        lines.append("splits: " + ", ".join(f"{k} {v}" for k, v in sorted(s.splits.items())))
    for unit, per_field in s.lengths.items():
        lines.append(f"length in {unit}:")
        for f, stats in per_field.items():
            lines.append(f"  {f:<9} {stats}")
        if unit in s.balance:
            lines.append(f"  negative/positive mean length: {s.balance[unit]:.2f}")
    for i, ex in enumerate(s.examples, 1):
        lines.append(f"example {i} ({ex['id']}):")
        for f in ("query", "positive", "negative"):
            shown = ex[f] if isinstance(ex[f], str) else query_text(parse_query(ex[f]))
            text = textwrap.shorten(" ".join(shown.split()), 110, placeholder=" ...")
            lines.append(f"  {f:<9} {text}")
    if s.problems:
        lines.append(f"problems: {len(s.problems)} rows skipped")
        lines.extend(f"  {p}" for p in s.problems[:max_problems])
        if len(s.problems) > max_problems:
            lines.append(f"  ... and {len(s.problems) - max_problems} more")
    else:
        lines.append("problems: none")
    return "\n".join(lines)
