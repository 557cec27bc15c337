"""The deltas a server loads at start-up, by name, with what their experiment measured.

``--delta NAME=DIR`` names a saved delta or steering set (:func:`unisteer.core.io.
load_steerable`). When ``DIR`` is a method's ``delta`` stage of an experiment
(``.../methods/<method>/delta``), the method's ``fit`` stage beside it gives the multiplier the
experiment chose and the fitted preference and utility curves (arXiv 2602.02343, Eqs. 4–5),
which ``/v1/models`` reports and the playground draws. A whole experiment folder adds every
method it holds, named after the method (``--experiment DIR``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unisteer.core.io import load_steerable
from unisteer.core.steering_set import Steerable, SteeringSet, deltas_of
from unisteer.errors import UsageError
from unisteer.report.results import FIT_RESULT, FitOutcome

CURVE_POINTS = 101


@dataclass(frozen=True)
class Loaded:
    """One servable delta (or steering set)."""

    name: str
    steerable: Steerable
    path: Path
    chosen_m: float | None
    grid: tuple[float, ...]
    curves: dict[str, Any] | None  # {"m": [...], "preference": [...], "utility": [...], "r2"}
    fit_error: str | None = None  # why the experiment's fit stage has no curves

    def summary(self) -> dict[str, Any]:
        """What ``/v1/models`` says about it."""
        members = deltas_of(self.steerable)
        return {
            "name": self.name,
            "kind": "set" if isinstance(self.steerable, SteeringSet) else members[0].kind,
            "sites": [d.site for d in members],
            "layers": [d.layer for d in members],
            "objective": members[0].meta.get("objective"),
            "chosen_m": self.chosen_m,
            "grid": list(self.grid),
            "curves": self.curves,
            "fit_error": self.fit_error,
        }


def _fit_of(delta_dir: Path) -> FitOutcome | None:
    """The fit stage beside an experiment's delta stage (``None``: not an experiment's)."""
    fit_dir = delta_dir.parent / "fit"
    if not (fit_dir / FIT_RESULT).is_file():
        return None
    try:
        return FitOutcome.load(fit_dir)
    except (OSError, ValueError, KeyError, TypeError) as e:
        return FitOutcome.failed(f"{fit_dir / FIT_RESULT}: unreadable ({e})")


def _curves(fit: FitOutcome, grid: tuple[float, ...]) -> dict[str, Any] | None:
    if fit.train is None:
        return None
    lo, hi = fit.train.m_range
    if grid:
        lo, hi = min(lo, min(grid)), max(hi, max(grid))
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
        return None
    m = np.linspace(lo, hi, CURVE_POINTS)

    def finite(values: Any) -> list[float | None]:
        return [float(v) if math.isfinite(v) else None for v in np.asarray(values, dtype=float)]

    return {
        "m": [float(x) for x in m],
        "preference": finite(fit.train.preference.predict(m)),
        "utility": finite(fit.train.utility.predict(m)),
        "r2": {"preference": fit.train.preference.r2, "utility": fit.train.utility.r2},
        "fitted_range": [float(x) for x in fit.train.m_range],
    }


def load_one(name: str, path: str | Path, model: Any, tokenizer: Any) -> Loaded:
    """The delta or set at ``path`` under ``name``, with its experiment's fit when it has one."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"--delta {name}={path}: no such file or folder")
    steerable = load_steerable(p, model, tokenizer=tokenizer)
    first = deltas_of(steerable)[0]
    meta = steerable.meta if isinstance(steerable, SteeringSet) else first.meta
    grid = tuple(float(x) for x in meta.get("grid", ()) if isinstance(x, int | float))
    directory = p if p.is_dir() else p.parent
    fit = _fit_of(directory)
    ok = fit is not None and fit.ok
    return Loaded(
        name=name,
        steerable=steerable,
        path=p,
        chosen_m=fit.chosen_m if fit is not None and ok else None,
        grid=grid,
        curves=_curves(fit, grid) if fit is not None and ok else None,
        fit_error=fit.error if fit is not None and not ok else None,
    )


def experiment_deltas(folder: str | Path) -> list[tuple[str, Path]]:
    """``(method name, delta folder)`` of every trained method of an experiment's output."""
    root = Path(folder)
    found = sorted(p.parent for p in root.glob("methods/*/delta/stage.json"))
    if not found:
        raise UsageError(f"--experiment {folder}: no methods/<name>/delta stages in it")
    return [(d.parent.name, d) for d in found]


def load_all(
    specs: Iterable[tuple[str, str | Path]], model: Any, tokenizer: Any
) -> dict[str, Loaded]:
    """Every named delta; a name given twice is refused."""
    out: dict[str, Loaded] = {}
    for name, path in specs:
        if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise UsageError(f"--delta {name}={path}: a name is letters, digits, '-', '_', '.'")
        if name in out:
            raise UsageError(f"--delta {name}: the name is given twice")
        out[name] = load_one(name, path, model, tokenizer)
    return out
