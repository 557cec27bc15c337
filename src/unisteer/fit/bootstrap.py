"""Percentile bootstrap intervals over pairs.

For b = 1..B: draw as many pair ids as there are pairs, with replacement (seeded); average
the drawn pairs' curves at each m (utility: in-domain points only); refit, starting from the
full-data fit and a few seeded random starts. Replicates whose data are degenerate or whose
refit does not converge are skipped and counted. The interval for each parameter is the
[(1 - level)/2, (1 + level)/2] percentile range of the converged replicates (NaN if fewer
than two converged).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from unisteer.fit.curves import model_for
from unisteer.fit.data import check_points, pair_matrix
from unisteer.fit.errors import FitError
from unisteer.fit.result import CurveFit
from unisteer.fit.solve import solve


def bootstrap_intervals(
    table: pd.DataFrame,
    fit: CurveFit,
    *,
    n: int,
    level: float = 0.95,
    seed: int = 0,
    n_starts: int = 3,
) -> CurveFit:
    """``fit`` with ``ci``, ``ci_level``, ``n_bootstrap`` and ``n_bootstrap_converged`` set."""
    if n < 1:
        raise ValueError(f"the number of bootstrap resamples must be positive, got {n}")
    if not 0 < level < 1:
        raise ValueError(f"ci_level must be in (0, 1), got {level}")
    model = model_for(fit.kind)
    matrix = pair_matrix(table, fit.kind)
    n_pairs = len(matrix.pair_ids)
    rng = np.random.default_rng([seed, 0xB007])
    thetas: list[np.ndarray] = []
    for b in range(n):
        rows = rng.integers(0, n_pairs, size=n_pairs)
        m, y = matrix.mean_of(rows)
        try:
            check_points(m, y, kind=fit.kind, label="bootstrap resample")
        except FitError:
            continue
        sol = solve(
            model,
            m,
            y,
            n_starts=n_starts,
            seed=seed + 1 + b,
            warm=[fit.theta],
            min_width=fit.min_width,
        )
        if sol.converged:
            thetas.append(sol.theta)
    tail = 100 * (1 - level) / 2
    if len(thetas) >= 2:
        lo, hi = np.percentile(np.array(thetas), [tail, 100 - tail], axis=0)
    else:
        lo = hi = np.full(len(model.names), np.nan)
    ci = {name: (float(a), float(c)) for name, a, c in zip(model.names, lo, hi, strict=True)}
    return replace(fit, ci=ci, ci_level=level, n_bootstrap=n, n_bootstrap_converged=len(thetas))
