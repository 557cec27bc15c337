"""The contract every replay runner keeps: ``capture`` once per batch, ``run`` per multipliers.

A runner replays blocks L..N of a frozen model for many multipliers at once (see
:mod:`unisteer.replay.recorder`). Callers (the sweep, the trainer) hold runners only through
:class:`Runner`, so a new runner is a new class here, never a new branch in a caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from torch import Tensor

from unisteer.core.positions import PositionMode
from unisteer.core.steering_set import Steerable
from unisteer.data.tokens import Batch, Encoded


@dataclass
class ReplayInput:
    """One batch of pairs as a runner captures it.

    ``batch`` holds rows ``[p0+, p0-, p1+, p1-, ...]``, right-padded
    (:func:`unisteer.data.tokens.pair_batch`); ``encoded`` the same pairs as token ids;
    ``hidden``, when known, the input of the first replayed block in the ordinary forward pass
    over ``batch`` (a runner that needs it computes it otherwise).
    """

    encoded: Sequence[tuple[Encoded, Encoded]]
    batch: Batch
    pad: int
    hidden: Tensor | None = None


class Capture(Protocol):
    """What a runner records for one batch; ``base`` is its ``[2P]`` NLL sums at m = 0."""

    @property
    def base(self) -> Tensor: ...


C = TypeVar("C", bound=Capture)


class Runner(Protocol[C]):
    """Replays blocks L..N for many multipliers; ``name`` is recorded in a sweep's metadata."""

    @property
    def name(self) -> str: ...

    def capture(self, inputs: ReplayInput) -> C | None:
        """Record what :meth:`run` needs for ``inputs``, or ``None`` when this runner cannot
        handle them (the caller then tries another)."""
        ...

    def run(self, cap: C, delta: Steerable, ms: Sequence[float], positions: PositionMode) -> Tensor:
        """``[K, 2P]`` completion NLL sums (float64, CPU), one row per multiplier of ``ms``."""
        ...
