"""The layer question: which block to steer, from data.

An experiment whose methods differ only in their block (``layers = ...`` on a ``[[method]]``,
as in ``unisteer run layers``) gets one row per (method, block): the m chosen on the train fit
(the largest fitted PrefOdds with a fitted UtilOdds drop within the budget, arXiv 2602.02343
§4), the fitted preference gain there, and the gain and utility drop measured on the test pairs
at that m with their bootstrap intervals. The block with the largest fitted gain within the
budget is marked as the choice; the test columns show whether it holds on unseen pairs.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from unisteer.files import write_json_atomic
from unisteer.report.results import ExperimentResults, MethodResult

_AT_LAYER = re.compile(r"-L\d+$")


def method_family(m: MethodResult) -> str:
    """The method's name without the ``-L<block>`` its layer rule gave it."""
    return _AT_LAYER.sub("", m.name)


def finite(value: float | None) -> float | None:
    """``value``, or ``None`` when it is not a finite number (JSON and the tables)."""
    return value if value is not None and math.isfinite(value) else None


def interval(ci: tuple[float, float] | None) -> list[float | None] | None:
    return None if ci is None else [finite(ci[0]), finite(ci[1])]


def layer_rows(results: ExperimentResults) -> list[dict[str, Any]]:
    """One row per method and block, for the families (methods named alike) that were run at
    more than one block; empty when there are none. ``chosen_layer`` marks, per family, the
    block with the largest fitted preference gain within the budget."""
    families: dict[str, list[MethodResult]] = {}
    for m in results.methods:
        families.setdefault(method_family(m), []).append(m)
    rows: list[dict[str, Any]] = []
    for family, members in families.items():
        placed = [m for m in members if m.layer is not None]
        if len({m.layer for m in placed}) < 2:
            continue
        block: list[dict[str, Any]] = []
        for m in sorted(placed, key=lambda x: int(x.layer or 0)):
            choice = m.fit.choice if m.fit.ok else None
            ev = m.evaluation
            block.append(
                {
                    "family": family,
                    "method": m.name,
                    "layer": m.layer,
                    "chosen_m": None if choice is None else finite(choice.m),
                    "fit_pref_gain": None if choice is None else finite(choice.pref_gain),
                    "fit_util_drop": None if choice is None else finite(choice.util_drop),
                    "test_pref_gain": finite(ev.pref_gain),
                    "test_pref_gain_ci": interval(ev.pref_gain_ci),
                    "test_util_drop": finite(ev.util_drop),
                    "test_util_drop_ci": interval(ev.util_drop_ci),
                    "accuracy_m0": finite(ev.accuracy_m0),
                    "accuracy": finite(ev.accuracy),
                    "fit_error": None if m.fit.ok else m.fit.error,
                    "chosen_layer": False,
                }
            )
        gains = [r["fit_pref_gain"] for r in block]
        if any(g is not None for g in gains):
            best = max(range(len(block)), key=lambda i: -math.inf if gains[i] is None else gains[i])
            block[best]["chosen_layer"] = True
        rows += block
    return rows


LAYER_COLUMNS = [
    ("family", "method"),
    ("layer", "block"),
    ("chosen_m", "chosen m"),
    ("fit_pref_gain", "PrefOdds gain (fit)"),
    ("fit_util_drop", "UtilOdds drop (fit)"),
    ("test_pref_gain", "PrefOdds gain (test)"),
    ("test_pref_gain_ci", "95% CI"),
    ("test_util_drop", "UtilOdds drop (test)"),
    ("test_util_drop_ci", "95% CI"),
    ("accuracy", "accuracy at m"),
    ("chosen_layer", "chosen block"),
]


def write_layer_table(rows: list[dict[str, Any]], out: str | Path) -> Path:
    """``layers.json`` (the rows) in ``out``, atomically."""
    path = Path(out) / "layers.json"
    write_json_atomic(path, rows)
    return path


__all__ = ["LAYER_COLUMNS", "layer_rows", "method_family", "write_layer_table"]
