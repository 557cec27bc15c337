"""The ``[control]`` stage of an experiment: a controller swept over its KL budgets on the test
pairs, beside the fixed-m sweep (arXiv 2602.02343 §7, open question 3; docs/results.md,
"Adaptive steering").

Per method: the teacher-forced PrefOdds and UtilOdds of the test pairs under the controller at
every kappa (:func:`unisteer.control.score.sweep_controller`), as gains against m = 0 scored
the same way (kappa = 0 under the same controller: token by token, summed, the unsteered
model exactly); and one greedy generation of the first test prompt at
``sample_kappa`` with the multiplier and KL of every token, for the report's ``m_t`` trace.
``m_max`` left unset is the positive end of the method's grid. Writes ``control/
kappa_sweep.parquet`` (per pair and kappa), ``control/control.json`` (a :class:`~unisteer.
report.results.ControlResult`) and ``control/control.png``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from unisteer.control import generate_controlled, score_controlled, sweep_controller
from unisteer.control.score import pairs_profile
from unisteer.control.spec import ControlSpec
from unisteer.core.delta import Delta
from unisteer.data.conversation import query_text
from unisteer.experiment.config import Experiment
from unisteer.experiment.stages import Stage, digest
from unisteer.files import write_json_atomic, write_parquet_atomic
from unisteer.report.plots import plot_control
from unisteer.report.results import ControlResult, ControlTrace

CONTROL_FILE = "control.json"


def _m_max(spec: ControlSpec, grid: list[float]) -> ControlSpec:
    end = max(grid) if max(grid) > 0 else min(grid)
    return spec.with_m_max(end)


def sample_kappa(exp: Experiment) -> float:
    """The kappa of the report's trace: ``[control] sample_kappa``, else the middle budget."""
    if exp.sample_kappa is not None:
        return exp.sample_kappa
    ordered = sorted(exp.kappas)
    return ordered[len(ordered) // 2]


def control_stage(
    exp: Experiment,
    model: Any,
    tokenizer: Any,
    pairs: list[Any],
    mdir: Path,
    delta: Delta,
    grid: list[float],
    fixed_means: pd.DataFrame,
    after: Stage,
) -> ControlResult | None:
    """Run (or read back) the controller of ``exp`` for one method (see the module docstring)."""
    if exp.control is None or not pairs:
        return None
    spec = _m_max(exp.control, grid)
    at = sample_kappa(exp)
    prompt = pairs[0].query
    key = {
        "stage": "control",
        "after": after.content_digest,
        "spec": spec.describe(),
        "kappas": [str(k) for k in exp.kappas],
        "pairs": digest([p.key for p in pairs]),
        "positions": exp.positions,
        "include_suffix": exp.include_suffix,
        "sample": {"kappa": str(at), "tokens": exp.sample_tokens},
    }
    stage = Stage(mdir / "control", key)
    if stage.done():
        return ControlResult.from_dict(json.loads((stage.directory / CONTROL_FILE).read_text()))
    stage.start()
    opts: dict[str, Any] = {"positions": exp.positions}
    profile = (
        pairs_profile(model, tokenizer, pairs, delta, spec, **opts) if spec.needs_profile else None
    )
    table = sweep_controller(
        model, tokenizer, pairs, delta, spec, exp.kappas, include_suffix=exp.include_suffix,
        progress=False, profile=profile, **opts,
    )  # fmt: skip
    # m = 0 scored the same way: kappa = 0 is the unsteered model exactly (control.controllers)
    base = table[table["kappa"] == 0.0]
    if base.empty:
        base = score_controlled(model, tokenizer, pairs, delta, spec.at(0.0, profile),
                                include_suffix=exp.include_suffix, **opts)  # fmt: skip
    write_parquet_atomic(stage.directory / "kappa_sweep.parquet", table)
    means = kappa_means(table, base)
    gen = generate_controlled(model, tokenizer, [prompt], delta, spec.at(at, profile),
                              max_new_tokens=exp.sample_tokens, **opts)[0]  # fmt: skip
    pieces = tuple(str(tokenizer.decode([t])) for t in gen.token_ids)
    trace = ControlTrace(query_text(prompt), at, gen.text, pieces, gen.m, gen.kl)
    result = ControlResult(spec.describe(), means, trace)
    write_json_atomic(stage.directory / CONTROL_FILE, result.to_dict())
    plot_control(fixed_means, result, stage.directory / "control.png")
    stage.finish()
    return result


def kappa_means(table: pd.DataFrame, base: pd.DataFrame) -> pd.DataFrame:
    """Per kappa: ``mean_m``, the mean PrefOdds and UtilOdds, their gain and drop against the
    m = 0 scores ``base`` (the same pairs, scored the same way), and ``n``."""

    def mean(x: pd.Series) -> float:  # one summation for the base and each kappa
        return float(np.mean(x.to_numpy(dtype=np.float64)))

    p0, u0 = mean(base["pref_odds"]), mean(base["util_odds"])
    g = table.groupby("kappa", sort=True)
    out = pd.DataFrame(
        {
            "mean_m": g["mean_m"].agg(mean),
            "pref_odds": g["pref_odds"].agg(mean),
            "util_odds": g["util_odds"].agg(mean),
            "n": g.size(),
        }
    ).reset_index()
    out["pref_gain"] = out["pref_odds"] - p0
    out["util_drop"] = u0 - out["util_odds"]
    return out
