"""Training objectives, one module each: DiffMean (closed form), SFT, RePS and SPLIT.

Each trained objective is a small frozen dataclass of options with two plain methods:
``rows(n_pairs, draw, kind)`` says which completions run under which multiplier, and
``loss(rows, scores)`` turns their log-probabilities into a scalar. The equations are in
each module's docstring.
"""

from __future__ import annotations

from typing import Any

from unisteer.training.objectives.diffmean import diffmean
from unisteer.training.objectives.reps import RePS, reps_loss
from unisteer.training.objectives.rows import Rows, Scores
from unisteer.training.objectives.sft import SFT, sft_loss
from unisteer.training.objectives.split import SPLIT, split_loss

Objective = SFT | RePS | SPLIT
OBJECTIVES: tuple[str, ...] = ("diffmean", "sft", "reps", "split")


def make_objective(name: str, **options: Any) -> Objective:
    """The trained objective ``name`` (``"sft"``, ``"reps"`` or ``"split"``) with options."""
    classes: dict[str, type[SFT] | type[RePS] | type[SPLIT]] = {
        "sft": SFT,
        "reps": RePS,
        "split": SPLIT,
    }
    if name == "diffmean":
        raise ValueError("diffmean is closed-form: call unisteer.objectives.diffmean()")
    if name not in classes:
        raise ValueError(f"unknown objective {name!r}; choose one of {OBJECTIVES}")
    return classes[name](**options)


__all__ = [
    "OBJECTIVES",
    "SFT",
    "SPLIT",
    "Objective",
    "RePS",
    "Rows",
    "Scores",
    "diffmean",
    "make_objective",
    "reps_loss",
    "sft_loss",
    "split_loss",
]
