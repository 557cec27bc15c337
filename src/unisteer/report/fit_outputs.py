"""``unisteer fit``: fit a sweep table (and optionally a test sweep), write fits.json and plots.

Three steps, usable on their own:

* :func:`fit_tables` fits in-memory sweep tables and returns a :class:`FittedSweeps` (the
  :class:`~unisteer.fit.SweepFit` objects, the choice of m, R² three ways, per-pair fits);
* :func:`write_fit_outputs` writes ``fits.json`` and the PNG plots of a :class:`FittedSweeps`;
* :func:`fit_command` reads two ``sweep.parquet`` files and does both (what ``unisteer fit``
  runs).

Output directory contents:

* ``fits.json`` — every parameter, R² (in-sample on train; with a test sweep also in-sample on
  test and train → test), convergence status and messages, the constraint violation, the
  linear slope, the region boundaries, the chosen multiplier (from the train fit; with a test
  sweep also what the test fit predicts at that m), and per-pair fits on request;
* ``fit.png`` (train data and fits), ``fit_test.png`` (test data and fits, with the m chosen
  on the train fit marked, with a test sweep) and ``frontier.png`` (the preference–utility
  frontier).

Files are written atomically. Non-finite numbers appear as ``null`` in the JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from unisteer.errors import DataError
from unisteer.files import json_safe, write_text_atomic
from unisteer.fit import (
    FitConvergenceError,
    FitError,
    Generalization,
    MultiplierChoice,
    PairFits,
    SweepFit,
    choose_multiplier,
    fit_preference,
    fit_sweep,
    fit_utility,
    generalization,
    linear_slope,
    regions,
)
from unisteer.fit.margin import POINT_LEVEL, margin_for
from unisteer.report.plots import plot_frontier, plot_sweep_fit
from unisteer.scoring.table import read_sweep_table

FORMAT_VERSION = 1
N_STARTS = 16
SEED = 0
TEST_TITLE = "Test sweep: preference and utility against m (m chosen on the train fit)"


@dataclass(frozen=True)
class PerPairFits:
    """Every pair's own preference and utility fit of one sweep (failures recorded)."""

    preference: PairFits
    utility: PairFits

    def to_dict(self) -> dict[str, Any]:
        return {"preference": self.preference.to_dict(), "utility": self.utility.to_dict()}


@dataclass(frozen=True, eq=False)
class FittedSweeps:
    """The fits of a train sweep (and optionally a test sweep), in memory.

    ``train_source`` / ``test_source`` name the tables (the ``sweep.parquet`` paths; recorded
    in ``fits.json`` and in error messages). ``choice`` is chosen on the train fit with a
    UtilOdds budget of ``max_util_drop`` nats; ``generalization`` holds R² three ways
    (paper Tables 2, 6, 7) when there is a test sweep.
    """

    train: SweepFit
    train_table: pd.DataFrame
    train_source: str
    choice: MultiplierChoice
    max_util_drop: float
    n_starts: int
    seed: int
    bootstrap: int
    test: SweepFit | None = None
    test_table: pd.DataFrame | None = None
    test_source: str | None = None
    generalization: Generalization | None = None
    per_pair: dict[str, PerPairFits] | None = None

    def choice_on_test(self) -> MultiplierChoice | None:
        """The train fit's choice of m, with the test fit's curves there (``None``: no test).

        ``pref_gain`` and ``util_drop`` are the test fit's PrefOdds gain and UtilOdds drop
        from m = 0 at that m; ``constraint_active`` and ``at_range_edge`` are the train
        fit's."""
        if self.test is None:
            return None
        m = self.choice.m
        pref = float(self.test.preference.predict(m))
        util = float(self.test.utility.predict(m))
        pref0 = float(self.test.preference.predict(0.0))
        util0 = float(self.test.utility.predict(0.0))
        return replace(
            self.choice,
            pref=pref,
            util=util,
            pref_gain=pref - pref0,
            util_drop=util0 - util,
            pref_at_zero=pref0,
            util_at_zero=util0,
        )

    def to_dict(self, plots: dict[str, Path] | None = None) -> dict[str, Any]:
        """What ``fits.json`` holds (JSON-safe), with the paths of ``plots`` written."""
        result: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "model": {
                "decay": "D(m) = (1 + (m - m±)²/L±)^(-p±), side by sign of m, D(0⁺) = D(0⁻)",
                "preference": "PrefOdds = (alpha·m + beta)·D_p(m) + b",
                "utility": "UtilOdds = beta·D_u(m) + b",
                "fitted": "mean curve over pairs (utility: in-domain points)",
                "n_starts": self.n_starts,
                "seed": self.seed,
                "bootstrap": self.bootstrap,
            },
            "max_util_drop": self.max_util_drop,
            "train": _summary(self.train, self.train_table, self.train_source),
            "choice": self.choice.to_dict(),
            "r2": {
                "preference": {"train": self.train.preference.r2},
                "utility": {"train": self.train.utility.r2},
            },
        }
        on_test = self.choice_on_test()
        if self.test is not None and self.test_table is not None and on_test is not None:
            result["test"] = _summary(self.test, self.test_table, str(self.test_source))
            if self.generalization is not None:
                result["r2"] = self.generalization.to_dict()
            result["choice_on_test"] = {
                "m": on_test.m,
                "pref_gain": on_test.pref_gain,
                "util_drop": on_test.util_drop,
            }
        if self.per_pair is not None:
            result["per_pair"] = {split: p.to_dict() for split, p in self.per_pair.items()}
        if plots is not None:
            result["plots"] = {k: str(v) for k, v in plots.items()}
        return dict(json_safe(result))


def _fit_table(
    table: pd.DataFrame, source: str, *, n_starts: int, seed: int, bootstrap: int
) -> SweepFit:
    try:
        return fit_sweep(table, n_starts=n_starts, seed=seed, bootstrap=bootstrap)
    except FitConvergenceError as e:
        raise FitConvergenceError(f"{source}: {e}", e.result) from e
    except FitError as e:
        raise FitError(f"{source}: {e}") from e


def _pairs(table: pd.DataFrame, *, n_starts: int, seed: int) -> PerPairFits:
    pref = fit_preference(table, per_pair=True, n_starts=n_starts, seed=seed, strict=False)
    util = fit_utility(table, per_pair=True, n_starts=n_starts, seed=seed, strict=False)
    return PerPairFits(pref, util)


def _summary(fit: SweepFit, table: pd.DataFrame, source: str) -> dict[str, Any]:
    slope = linear_slope(fit)
    return {
        "path": source,
        "n_pairs": int(table["pair_id"].nunique()),
        "n_rows": len(table),
        "fits": fit.to_dict(),
        "linear_slope": {**asdict(slope), "slope": slope.slope},
        "regions": regions(fit).to_dict(),
    }


def fit_tables(
    train_table: pd.DataFrame,
    test_table: pd.DataFrame | None = None,
    *,
    train_source: str | Path = "train sweep",
    test_source: str | Path = "test sweep",
    max_util_drop: float = 1.0,
    per_pair: bool = False,
    n_starts: int = N_STARTS,
    seed: int = SEED,
    bootstrap: int = 0,
    budget_level: float = POINT_LEVEL,
) -> FittedSweeps:
    """Fit the mean curves of the sweep table ``train_table`` (and ``test_table``), choose m
    on the train fit, and return everything in memory; nothing is written.

    The mean curves are fitted with ``n_starts`` seeded SLSQP starts (paper Eqs. 12, 15, 17);
    ``bootstrap=B`` adds percentile intervals over pairs (B resamples) to the train fits;
    ``per_pair`` adds per-pair fits (failures recorded, not raised). The multiplier is chosen
    on the train fit with a UtilOdds budget of ``max_util_drop`` nats, kept with one-sided
    confidence ``budget_level`` over the train pairs (:mod:`unisteer.fit.margin`; 0.5: the
    fitted drop itself, the paper's rule). Raises
    :class:`~unisteer.fit.FitError` naming ``train_source`` or ``test_source`` on degenerate
    data or a mean fit that does not converge."""
    train_name = str(train_source)
    test_name = str(test_source)
    train = _fit_table(train_table, train_name, n_starts=n_starts, seed=seed, bootstrap=bootstrap)
    test = None
    if test_table is not None:
        test = _fit_table(test_table, test_name, n_starts=n_starts, seed=seed, bootstrap=0)
    choice = choose_multiplier(train, max_util_drop, margin=margin_for(train_table, budget_level))
    pairs = None
    if per_pair:
        pairs = {"train": _pairs(train_table, n_starts=n_starts, seed=seed)}
        if test_table is not None:
            pairs["test"] = _pairs(test_table, n_starts=n_starts, seed=seed)
    return FittedSweeps(
        train=train,
        train_table=train_table,
        train_source=train_name,
        choice=choice,
        max_util_drop=max_util_drop,
        n_starts=n_starts,
        seed=seed,
        bootstrap=bootstrap,
        test=test,
        test_table=test_table,
        test_source=test_name if test is not None else None,
        generalization=generalization(train, test) if test is not None else None,
        per_pair=pairs,
    )


def write_fit_outputs(
    fitted: FittedSweeps, out: str | Path, *, with_frontier: bool = True
) -> dict[str, Any]:
    """Write the PNG plots and ``fits.json`` of ``fitted`` into ``out`` (``fits.json`` last);
    return the dict written. ``with_frontier=False`` leaves out ``frontier.png`` (an experiment
    draws one frontier of all its methods instead)."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {
        "fit": plot_sweep_fit(
            fitted.train_table, fitted.train, out_dir / "fit.png", choice=fitted.choice
        )
    }
    frontier: dict[str, SweepFit] = {"train": fitted.train}
    if fitted.test is not None:
        plots["fit_test"] = plot_sweep_fit(
            fitted.test_table,
            fitted.test,
            out_dir / "fit_test.png",
            choice=fitted.choice_on_test(),
            choice_label="chosen m (train fit)",
            max_util_drop=fitted.max_util_drop,
            title=TEST_TITLE,
        )
        frontier["test"] = fitted.test
    if with_frontier:
        plots["frontier"] = plot_frontier(
            frontier,
            out_dir / "frontier.png",
            choices={"train": fitted.choice},
            max_util_drop=fitted.max_util_drop,
        )
    result = fitted.to_dict(plots)
    write_text_atomic(out_dir / "fits.json", json.dumps(result, indent=2, allow_nan=False) + "\n")
    return result


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
    budget_level: float = POINT_LEVEL,
) -> dict[str, Any]:
    """Fit ``sweep`` (and ``test``), write ``fits.json`` and PNG plots to ``out``, return the
    dict that was written.

    ``sweep`` and ``test`` are ``sweep.parquet`` files (or directories holding one); the
    options are those of :func:`fit_tables`. Raises :class:`~unisteer.fit.FitError` naming
    the file on a bad path or table, degenerate data, or a mean fit that does not converge;
    a failure leaves no output behind."""
    try:
        train_table = read_sweep_table(Path(sweep))
        test_table = read_sweep_table(Path(test)) if test is not None else None
    except DataError as e:  # every problem with fit_command's inputs is a FitError
        raise FitError(str(e)) from e
    fitted = fit_tables(
        train_table,
        test_table,
        train_source=Path(sweep),
        test_source=Path(test) if test is not None else "test sweep",
        max_util_drop=max_util_drop,
        per_pair=per_pair,
        n_starts=n_starts,
        seed=seed,
        bootstrap=bootstrap,
        budget_level=budget_level,
    )
    return write_fit_outputs(fitted, Path(out))
