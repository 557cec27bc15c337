"""``unisteer fit``: fit a sweep table (and optionally a test sweep), write fits.json and plots.

Output directory contents:

* ``fits.json`` — every parameter, R² (in-sample on train; with a test sweep also in-sample on
  test and train → test), convergence status and messages, the constraint violation, the
  linear slope, the region boundaries, the chosen multiplier (from the train fit; with a test
  sweep also what the test fit predicts at that m), and per-pair fits on request;
* ``fit.png`` (train data and fits), ``fit_test.png`` (test data and fits, with a test sweep)
  and ``frontier.png`` (the preference–utility frontier).

Files are written atomically. Non-finite numbers appear as ``null`` in the JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from unisteer.errors import DataError
from unisteer.files import json_safe, write_text_atomic
from unisteer.fit import (
    FitConvergenceError,
    FitError,
    SweepFit,
    choose_multiplier,
    fit_preference,
    fit_sweep,
    fit_utility,
    generalization,
    linear_slope,
    regions,
)
from unisteer.report.plots import plot_frontier, plot_sweep_fit
from unisteer.scoring.table import read_sweep_table

FORMAT_VERSION = 1
N_STARTS = 16
SEED = 0


def _fit_file(
    table: pd.DataFrame, path: Path, *, n_starts: int, seed: int, bootstrap: int
) -> SweepFit:
    try:
        return fit_sweep(table, n_starts=n_starts, seed=seed, bootstrap=bootstrap)
    except FitConvergenceError as e:
        raise FitConvergenceError(f"{path}: {e}", e.result) from e
    except FitError as e:
        raise FitError(f"{path}: {e}") from e


def _pairs(table: pd.DataFrame, *, n_starts: int, seed: int) -> dict[str, Any]:
    pref = fit_preference(table, per_pair=True, n_starts=n_starts, seed=seed, strict=False)
    util = fit_utility(table, per_pair=True, n_starts=n_starts, seed=seed, strict=False)
    return {"preference": pref.to_dict(), "utility": util.to_dict()}


def _summary(fit: SweepFit, table: pd.DataFrame, path: Path) -> dict[str, Any]:
    slope = linear_slope(fit)
    return {
        "path": str(path),
        "n_pairs": int(table["pair_id"].nunique()),
        "n_rows": len(table),
        "fits": fit.to_dict(),
        "linear_slope": {**asdict(slope), "slope": slope.slope},
        "regions": regions(fit).to_dict(),
    }


def fit_command(
    sweep: Path,
    test: Path | None,
    out: Path,
    *,
    max_util_drop: float = 1.0,
    per_pair: bool = False,
    n_starts: int = N_STARTS,
    seed: int = SEED,
    bootstrap: int = 0,
) -> dict[str, Any]:
    """Fit ``sweep`` (and ``test``), write ``fits.json`` and PNG plots to ``out``, return the
    dict that was written.

    ``sweep`` and ``test`` are ``sweep.parquet`` files (or directories holding one). The mean
    curves are fitted with ``n_starts`` seeded SLSQP starts; ``bootstrap=B`` adds percentile
    intervals over pairs (B resamples) to the train fits; ``per_pair`` adds per-pair fits
    (failures recorded, not raised). The multiplier is chosen on the train fit with a UtilOdds
    budget of ``max_util_drop`` nats. Raises :class:`~unisteer.fit.FitError` naming the file on
    a bad path or table, degenerate data, or a mean fit that does not converge."""
    out = Path(out)
    try:
        train_table = read_sweep_table(Path(sweep))
        test_table = read_sweep_table(Path(test)) if test is not None else None
    except DataError as e:  # every problem with fit_command's inputs is a FitError
        raise FitError(str(e)) from e
    # every fit first, so that a failure leaves no partial output behind
    train = _fit_file(train_table, Path(sweep), n_starts=n_starts, seed=seed, bootstrap=bootstrap)
    test_fit = None
    if test_table is not None and test is not None:
        test_fit = _fit_file(test_table, Path(test), n_starts=n_starts, seed=seed, bootstrap=0)
    choice = choose_multiplier(train, max_util_drop)
    result: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "model": {
            "decay": "D(m) = (1 + (m - m±)²/L±)^(-p±), side by sign of m, D(0⁺) = D(0⁻)",
            "preference": "PrefOdds = (alpha·m + beta)·D_p(m) + b",
            "utility": "UtilOdds = beta·D_u(m) + b",
            "fitted": "mean curve over pairs (utility: in-domain points)",
            "n_starts": n_starts,
            "seed": seed,
            "bootstrap": bootstrap,
        },
        "max_util_drop": max_util_drop,
        "train": _summary(train, train_table, Path(sweep)),
        "choice": choice.to_dict(),
        "r2": {
            "preference": {"train": train.preference.r2},
            "utility": {"train": train.utility.r2},
        },
    }
    if test_fit is not None and test_table is not None and test is not None:
        result["test"] = _summary(test_fit, test_table, Path(test))
        result["r2"] = generalization(train, test_fit).to_dict()
        result["choice_on_test"] = {
            "m": choice.m,
            "pref_gain": float(test_fit.preference.predict(choice.m))
            - float(test_fit.preference.predict(0.0)),
            "util_drop": float(test_fit.utility.predict(0.0))
            - float(test_fit.utility.predict(choice.m)),
        }
    if per_pair:
        result["per_pair"] = {"train": _pairs(train_table, n_starts=n_starts, seed=seed)}
        if test_table is not None:
            result["per_pair"]["test"] = _pairs(test_table, n_starts=n_starts, seed=seed)

    out.mkdir(parents=True, exist_ok=True)
    plots = {"fit": plot_sweep_fit(train_table, train, out / "fit.png", choice=choice)}
    frontier: dict[str, SweepFit] = {"train": train}
    if test_fit is not None:
        plots["fit_test"] = plot_sweep_fit(
            test_table,
            test_fit,
            out / "fit_test.png",
            max_util_drop=max_util_drop,
            title="Test sweep: preference and utility against m",
        )
        frontier["test"] = test_fit
    plots["frontier"] = plot_frontier(
        frontier, out / "frontier.png", choices={"train": choice}, max_util_drop=max_util_drop
    )
    result["plots"] = {k: str(v) for k, v in plots.items()}
    result = json_safe(result)
    write_text_atomic(out / "fits.json", json.dumps(result, indent=2, allow_nan=False) + "\n")
    return result
