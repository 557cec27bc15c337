"""What one model's sweeps can share: which fast runner proved itself, and the captures.

A sweep pays, before its first multiplier, for the self-check of its fast path (an ordinary
forward pass with logits, a capture and a replay of three multipliers:
:mod:`unisteer.replay.check`) and, per batch, for a capture (the blocks before the site, run
once). Neither depends on the delta's values: the check is about the model, the site and
the position mode (does this runner reproduce this model's forward pass at this kind of
site?), and a capture is block L's input and the arguments blocks L..N receive, for one
batch of token ids. An experiment sweeps many deltas at one layer on the same pairs (every
method, every adaptive round, train and test), so it holds one :class:`ReplayCache` per model
and passes it to every :func:`unisteer.scoring.sweep.sweep`: the check runs once per kind of
site and each batch is captured once per replay layer.

The cache is only valid while the model's weights do not change; it refuses a different
model object (held weakly, so a cache never keeps a model alive). Captures are kept in memory
(their size is reported by :attr:`nbytes`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from torch import Tensor, nn

from unisteer.data.tokens import Encoded


def batch_key(encoded: Sequence[tuple[Encoded, Encoded]], pad: int) -> Hashable:
    """The token content of one batch of pairs: what a capture depends on besides the model
    and the replay layer."""
    return (
        pad,
        tuple((a.input_ids, a.prompt_length, b.input_ids, b.prompt_length) for a, b in encoded),
    )


def _tensor_bytes(obj: Any, seen: set[int]) -> int:
    if isinstance(obj, Tensor):
        if id(obj) in seen:
            return 0
        seen.add(id(obj))
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v, seen) for v in obj)
    if hasattr(obj, "__dict__"):
        return sum(_tensor_bytes(v, seen) for v in vars(obj).values())
    return 0


class ReplayCache:
    """Trusted runners and captures shared by the sweeps of one model (see the module doc)."""

    def __init__(self, model: nn.Module) -> None:
        self._model = weakref.ref(model)
        self._trusted: dict[Hashable, Any] = {}
        self._captures: dict[Hashable, Any] = {}
        self._runners: dict[Hashable, Any] = {}
        self.hits = 0
        self.misses = 0

    def check_model(self, model: nn.Module) -> None:
        if self._model() is not model:
            raise ValueError("this ReplayCache belongs to another model; make one per model")

    def decided(self, key: Hashable) -> bool:
        """Whether the self-check already ran for ``key`` (model site, kind, positions, dtype)."""
        return key in self._trusted

    def trusted(self, key: Hashable) -> Any:
        """The runner that passed the self-check for ``key``; ``None`` when none did (the
        naive path)."""
        return self._trusted.get(key)

    def trust(self, key: Hashable, runner: Any) -> None:
        self._trusted[key] = runner

    def runner(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The one runner object for ``key`` (its class, replay layer), made on first use. A
        runner learns the output head while it captures, so a stored capture is only ever
        replayed by the runner object that made it."""
        if key not in self._runners:
            self._runners[key] = make()
        return self._runners[key]

    def capture(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The capture stored under ``key``, made (and stored, unless ``None``) on a miss."""
        if key in self._captures:
            self.hits += 1
            return self._captures[key]
        self.misses += 1
        cap = make()
        if cap is not None:
            self._captures[key] = cap
        return cap

    def store(self, key: Hashable, cap: Any) -> None:
        self._captures[key] = cap

    def __len__(self) -> int:
        """How many captures are stored."""
        return len(self._captures)

    @property
    def nbytes(self) -> int:
        """Bytes of tensors the stored captures hold."""
        seen: set[int] = set()
        return sum(_tensor_bytes(c, seen) for c in self._captures.values())
