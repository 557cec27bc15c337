"""The sweep's results: a tidy table with one row per (pair, m), its per-m means, and reading
it back from disk.

Columns: ``pair_id``, ``m``, ``loss_pos`` (L_p), ``loss_neg`` (L_n), ``pref_odds``,
``util_odds``, ``util_in_domain`` (see :mod:`unisteer.scoring.odds`), ``tokens_pos``,
``tokens_neg``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from unisteer.errors import DataError
from unisteer.files import write_parquet_atomic, write_text_atomic
from unisteer.scoring.odds import pref_odds, util_odds

Reduction = Literal["sum", "mean"]
TABLE_COLUMNS = ("pair_id", "m", "pref_odds", "util_odds")


@dataclass
class SweepResult:
    """The tidy table of a sweep and its per-m summary."""

    table: pd.DataFrame
    reduction: Reduction = "sum"
    meta: dict[str, Any] = field(default_factory=dict)

    def means(self) -> pd.DataFrame:
        """Per m: mean and standard error of PrefOdds and UtilOdds, with point counts.

        UtilOdds statistics use in-domain points only; ``n_out_of_domain`` counts the rest.
        """
        return summarize_sweep(self.table)

    def save(self, directory: str | Path) -> Path:
        """``sweep.parquet`` (the table), ``means.parquet`` and ``sweep.json`` (metadata)."""
        out = Path(directory)
        for name, frame in (("sweep.parquet", self.table), ("means.parquet", self.means())):
            write_parquet_atomic(out / name, frame)
        meta = {**self.meta, "reduction": self.reduction}
        write_text_atomic(out / "sweep.json", json.dumps(meta, indent=2, default=str) + "\n")
        return out


def summarize_sweep(table: pd.DataFrame) -> pd.DataFrame:
    def sem(x: pd.Series) -> float:
        x = x.dropna()
        return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")

    rows = []
    for m, g in table.groupby("m", sort=True):
        ok = g[g["util_in_domain"]]
        rows.append(
            {
                "m": float(m),
                "n": len(g),
                "pref_odds": float(g["pref_odds"].mean()),
                "pref_odds_sem": sem(g["pref_odds"]),
                "util_odds": float(ok["util_odds"].mean()) if len(ok) else float("nan"),
                "util_odds_sem": sem(ok["util_odds"]),
                "n_out_of_domain": int((~g["util_in_domain"]).sum()),
                "loss_pos": float(g["loss_pos"].mean()),
                "loss_neg": float(g["loss_neg"].mean()),
                # an adaptive sweep's round and reason for this m (unisteer.fit.refine)
                **{c: g[c].iloc[0] for c in ("added", "reason") if c in g.columns},
            }
        )
    return pd.DataFrame(rows)


def make_table(
    ids: Sequence[str],
    ms: Sequence[float],
    lp: np.ndarray,
    ln: np.ndarray,
    npos: np.ndarray,
    nneg: np.ndarray,
) -> pd.DataFrame:
    util, ok = util_odds(lp, ln)
    return pd.DataFrame(
        {
            "pair_id": list(ids),
            "m": np.asarray(ms, dtype=np.float64),
            "loss_pos": lp,
            "loss_neg": ln,
            "pref_odds": pref_odds(lp, ln),
            "util_odds": util,
            "util_in_domain": ok,
            "tokens_pos": npos,
            "tokens_neg": nneg,
        }
    )


def read_sweep_table(path: Path) -> pd.DataFrame:
    """A sweep table from ``sweep.parquet`` (or a directory holding one); errors name the file."""
    p = Path(path)
    if p.is_dir():
        p = p / "sweep.parquet"
    if not p.is_file():
        raise DataError(
            f"{p}: no such file; give the sweep.parquet written by `unisteer sweep` "
            "(or the directory that holds it)"
        )
    try:
        table = pd.read_parquet(p)
    except Exception as e:  # pyarrow raises several types for a bad file
        raise DataError(f"{p}: cannot be read as a Parquet table ({e})") from e
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(
            f"{p}: not a sweep table, column(s) {', '.join(missing)} missing; give the "
            "sweep.parquet written by `unisteer sweep`, not means.parquet"
        )
    return table
