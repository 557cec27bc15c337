"""A controller *family*: what a sweep, an AxBench grid or an experiment file varies.

A :class:`~unisteer.control.controllers.Controller` is one setting (``fixed(4.0)``,
``kl_budget(0.5, m_max=16)``); a :class:`ControlSpec` names the family and its fixed parts, and
:meth:`ControlSpec.at` gives the controller at one value of the swept *setting*:

* ``fixed``: the setting is ``m`` (today's multiplier grids);
* ``kl_budget``: the setting is ``kappa``, with ``m_max`` and ``k`` fixed;
* ``static_kl``: the setting is ``kappa``; the constant ``m`` comes from a KL profile of
  rollouts (:func:`unisteer.control.calibrate.kl_profile`), computed once and given to
  :meth:`ControlSpec.at` for every kappa.

Plain values: the CLI (``--controller kl_budget --kappa 0.5``) and the TOML experiment files
(``[control]``) build one with :func:`control_spec`, which checks every field and names it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from unisteer.control.calibrate import choose_static
from unisteer.control.controllers import Controller, fixed, kl_budget

CONTROLLERS = ("fixed", "kl_budget", "static_kl")


@dataclass(frozen=True)
class ControlSpec:
    """A controller family. ``m_max``: the largest multiplier of ``kl_budget``'s candidates and
    of ``static_kl``'s profile (``None``: the caller's default, e.g. the delta's grid end);
    ``k``: ``kl_budget``'s candidates; ``q`` and ``points``: ``static_kl``'s percentile and
    profile grid."""

    name: str = "fixed"
    m_max: float | None = None
    k: int = 8
    q: float = 95.0
    points: int = 9

    def __post_init__(self) -> None:
        if self.name not in CONTROLLERS:
            raise ValueError(
                f"controller must be one of {', '.join(CONTROLLERS)}, got {self.name!r}"
            )
        if self.m_max is not None and (not math.isfinite(self.m_max) or self.m_max == 0):
            raise ValueError(f"m_max must be a finite number other than 0, got {self.m_max}")
        if self.k < 2:
            raise ValueError(f"k must be at least 2 (0 and m_max), got {self.k}")
        if not 0 < self.q <= 100:
            raise ValueError(f"q must be a percentile in (0, 100], got {self.q}")
        if self.points < 2:
            raise ValueError(f"points must be at least 2, got {self.points}")

    @property
    def setting(self) -> str:
        """The name of what a sweep of this family varies: ``"m"`` or ``"kappa"``."""
        return "m" if self.name == "fixed" else "kappa"

    @property
    def adaptive(self) -> bool:
        """Whether ``m_t`` is chosen token by token (not one constant per setting)."""
        return self.name == "kl_budget"

    @property
    def needs_profile(self) -> bool:
        return self.name == "static_kl"

    def with_m_max(self, m_max: float) -> ControlSpec:
        """This spec with ``m_max`` filled in where it was left to the caller."""
        if self.m_max is not None or self.name == "fixed":
            return self
        return ControlSpec(self.name, float(m_max), self.k, self.q, self.points)

    def for_delta(self, delta: Any) -> ControlSpec:
        """This spec with ``m_max`` from ``delta``'s recorded grid (``meta["grid"]``, its largest
        value) where it was left unset; a delta that records none is a ``ValueError``."""
        if self.name == "fixed" or self.m_max is not None:
            return self
        grid = getattr(delta, "meta", {}).get("grid")
        if not isinstance(grid, list) or not grid:
            raise ValueError(f"the delta records no multiplier grid; give the {self.name} "
                             "controller an m_max")  # fmt: skip
        return self.with_m_max(max(float(x) for x in grid))

    def check_settings(self, values: Sequence[float], what: str = "settings") -> list[float]:
        """``values`` as floats, checked for this family (finite m; kappa >= 0, inf allowed)."""
        out = [float(v) for v in values]
        if not out:
            raise ValueError(f"{what}: give at least one value")
        if self.name == "fixed":
            bad = [v for v in out if not math.isfinite(v)]
            if bad:
                raise ValueError(f"{what}: multipliers must be finite, got {bad[0]}")
        else:
            bad = [v for v in out if not v >= 0]
            if bad:
                raise ValueError(f"{what}: KL budgets are >= 0 nats (inf allowed), got {bad[0]}")
        return out

    def at(
        self, value: float, profile: tuple[Sequence[float], Sequence[float]] | None = None
    ) -> Controller:
        """The controller at one setting (``profile``: ``static_kl``'s ``(grid, percentile)``)."""
        if self.name == "fixed":
            return fixed(value)
        if self.m_max is None:
            raise ValueError(f"{self.name} needs m_max")
        if self.name == "kl_budget":
            return kl_budget(value, self.m_max, self.k)
        if profile is None:
            raise ValueError("static_kl needs the KL profile of its rollouts (kl_profile)")
        return Controller("static_kl", (choose_static(profile[0], profile[1], value),))

    def describe(self) -> dict[str, Any]:
        """JSON-safe fields (stored beside results; two runs with different specs differ)."""
        out: dict[str, Any] = {"name": self.name}
        if self.name != "fixed":
            out["m_max"] = self.m_max
        if self.name == "kl_budget":
            out["k"] = self.k
        if self.name == "static_kl":
            out["q"], out["points"] = self.q, self.points
        return out


def control_spec(fields: Mapping[str, Any], where: str = "controller") -> ControlSpec:
    """A :class:`ControlSpec` from a mapping (a TOML table, parsed CLI arguments); an unknown
    key or a bad value raises ``ValueError`` naming ``where`` and the key."""
    known = {"name", "m_max", "k", "q", "points"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    kw: dict[str, Any] = {}
    for key, kind in (("name", str), ("m_max", float), ("k", int), ("q", float), ("points", int)):
        value = fields.get(key)
        if value is None:
            continue
        if kind is str and not isinstance(value, str):
            raise ValueError(f"{where}.{key}: expected a string, got {value!r}")
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{where}.{key}: expected an integer, got {value!r}")
        if kind is float and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"{where}.{key}: expected a number, got {value!r}")
        kw[key] = kind(value)
    try:
        return ControlSpec(**kw)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
