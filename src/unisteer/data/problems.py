"""Problems found in input data, and the strict / lenient policy for them.

Every problem carries where it is (file, line or row, field) so the message can point at it. A
reader in strict mode raises :class:`~unisteer.errors.DataError` at the first problem; with
``strict=False`` it skips the row, records the problem, and goes on.
"""

from __future__ import annotations

from dataclasses import dataclass

from unisteer.errors import DataError


@dataclass(frozen=True)
class Problem:
    """One unusable row (or file)."""

    source: str
    line: int | None  # 1-based line (text files), row or item number; None for the file
    field: str | None
    message: str
    unit: str = "line"  # "line" for text files, "row" for tables, "item" for JSON lists

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}" if self.unit == "line" else f" {self.unit} {self.line}"
        if self.field is not None:
            where += f": field {self.field!r}"
        return f"{where}: {self.message}"


class ProblemLog:
    """Collects problems; raises on the first one when strict."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.problems: list[Problem] = []

    def report(self, problem: Problem) -> None:
        if self.strict:
            raise DataError(str(problem))
        self.problems.append(problem)
