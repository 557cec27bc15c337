"""A steering set: several deltas, at different sites, that act together under one multiplier.

A llama.cpp control vector has one direction per layer and a PEFT adapter one LoRA per
module; both are one intervention ``y'_s = y_s + m·(ΔW_s x_s + Δb_s)`` at every site ``s`` of
the set, with the same ``m`` (arXiv 2602.02343, Eq. 1 applied at each site). A set steers
(:func:`unisteer.steer`), sweeps (:func:`unisteer.sweep`), generates and is saved
(:func:`unisteer.core.io.save_steering_set`) like one delta. Pure bookkeeping: no hooks here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeAlias

from unisteer.core.delta import Delta
from unisteer.core.fingerprint import fingerprint_mismatch
from unisteer.errors import SteeringError


class SteeringSet:
    """Deltas at distinct sites with one multiplier (``m`` scales every member).

    Attributes:
        deltas: the members, in a fixed order (the order they are saved and hooked in).
        meta: free-form JSON-serialisable metadata (where the set came from, its grid...).
        fingerprint: the model the set was made for (the members' common fingerprint when
            not given), or ``None``.
    """

    def __init__(
        self,
        deltas: Sequence[Delta],
        *,
        meta: dict[str, Any] | None = None,
        fingerprint: dict[str, Any] | None = None,
    ) -> None:
        members = list(deltas)
        if not members:
            raise SteeringError("a steering set needs at least one delta")
        for d in members:
            if not isinstance(d, Delta):
                raise SteeringError(f"a steering set holds deltas, got {type(d).__name__}")
        sites = [d.site for d in members]
        repeated = sorted({s for s in sites if sites.count(s) > 1})
        if repeated:
            raise SteeringError(
                f"a steering set has one delta per site; {repeated} appear more than once "
                "(add their ΔW and Δb into one delta instead)"
            )
        prints = [d.fingerprint for d in members if d.fingerprint]
        for other in prints[1:]:
            problem = fingerprint_mismatch(prints[0], other)
            if problem:
                raise SteeringError(
                    f"the deltas of a steering set are for different models: {problem}"
                )
        self.deltas: tuple[Delta, ...] = tuple(members)
        self.meta: dict[str, Any] = dict(meta or {})
        self.fingerprint = (
            fingerprint if fingerprint is not None else (prints[0] if prints else None)
        )

    def __iter__(self) -> Iterator[Delta]:
        return iter(self.deltas)

    def __len__(self) -> int:
        return len(self.deltas)

    def __getitem__(self, index: int) -> Delta:
        return self.deltas[index]

    @property
    def sites(self) -> list[str]:
        return [d.site for d in self.deltas]

    @property
    def kinds(self) -> list[str]:
        return sorted({d.kind for d in self.deltas})

    def num_parameters(self) -> int:
        return sum(d.num_parameters() for d in self.deltas)

    def __repr__(self) -> str:
        return f"SteeringSet({len(self)} deltas: {', '.join(self.kinds)}; sites {self.sites})"


#: What steers: one delta, or a set of them under one multiplier.
Steerable: TypeAlias = Delta | SteeringSet


def deltas_of(steerable: Steerable | Sequence[Delta]) -> list[Delta]:
    """The deltas a delta, a steering set or a list of deltas stands for."""
    if isinstance(steerable, Delta):
        return [steerable]
    return list(steerable)


def describe(steerable: Steerable) -> dict[str, Any]:
    """A short JSON description (kind and site, or the members' kinds and sites)."""
    if isinstance(steerable, Delta):
        return {"kind": steerable.kind, "site": steerable.site}
    return {"kind": "set", "members": [{"kind": d.kind, "site": d.site} for d in steerable]}
