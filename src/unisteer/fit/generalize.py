"""R² three ways, as in the paper's Tables 2, 6 and 7.

* ``train``: parameters fitted on the train mean curve, scored on it (Table 2);
* ``test``: parameters fitted on the test mean curve, scored on it (Table 6);
* ``train_to_test``: parameters fitted on train, scored on the test mean curve (Table 7).

Each R² is 1 - SS_res/SS_tot over the points of the curve it is scored on, so
``train_to_test`` is negative when the train curve predicts the test curve worse than the
test curve's own mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from unisteer.fit.data import mean_points
from unisteer.fit.fitting import fit_sweep
from unisteer.fit.result import CurveFit, SweepFit


@dataclass(frozen=True)
class R2Scores:
    """R² of one curve kind: in-sample on train and on test, and train → test."""

    train: float
    test: float
    train_to_test: float

    def to_dict(self) -> dict[str, float | None]:
        return {
            k: (v if v == v else None)
            for k, v in (
                ("train", self.train),
                ("test", self.test),
                ("train_to_test", self.train_to_test),
            )
        }


@dataclass(frozen=True, eq=False)
class Generalization:
    """Both sweeps' fits and the three R² numbers for preference and for utility."""

    train: SweepFit
    test: SweepFit
    preference: R2Scores
    utility: R2Scores

    def to_dict(self) -> dict[str, Any]:
        return {"preference": self.preference.to_dict(), "utility": self.utility.to_dict()}


def _scores(train: CurveFit, test: CurveFit) -> R2Scores:
    return R2Scores(train.r2, test.r2, train.r2_on(test.m, test.y))


def transfer_r2(fit: CurveFit, table: pd.DataFrame) -> float:
    """R² of ``fit``'s parameters on the mean curve of another sweep table."""
    cp = mean_points(table, fit.kind, label=f"{fit.kind} mean curve of the scoring table")
    return fit.r2_on(cp.m, cp.y)


def generalization(
    train: pd.DataFrame | SweepFit,
    test: pd.DataFrame | SweepFit,
    *,
    n_starts: int = 16,
    seed: int = 0,
    strict: bool = True,
) -> Generalization:
    """Fit both sweeps (or take fits already made) and report R² three ways.

    ``strict`` as in :func:`~unisteer.fit.fitting.fit_sweep`; with ``strict=False`` check
    ``result.train.converged`` and ``result.test.converged`` before trusting the numbers.
    """
    tr = (
        train
        if isinstance(train, SweepFit)
        else fit_sweep(train, n_starts=n_starts, seed=seed, strict=strict)
    )
    te = (
        test
        if isinstance(test, SweepFit)
        else fit_sweep(test, n_starts=n_starts, seed=seed, strict=strict)
    )
    return Generalization(
        tr, te, _scores(tr.preference, te.preference), _scores(tr.utility, te.utility)
    )
