"""``unisteer fit``: fit the manifold model to a sweep, with plots and the choice of m."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _level(text: str) -> float:
    """``--budget-level``: a one-sided confidence in [0.5, 1), refused while parsing (before
    any fitting) with the library's own message."""
    from unisteer.fit.margin import check_level

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a one-sided confidence in [0.5, 1), got {text!r}"
        ) from None
    try:
        return check_level(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def register(sub: Any) -> None:
    p = sub.add_parser(
        "fit", help="fit PrefOdds/UtilOdds curves of a sweep; R², regions and the chosen m"
    )
    p.add_argument("sweep", type=Path, help="sweep.parquet (or the folder holding it)")
    p.add_argument("--test", type=Path, help="the test split's sweep, for R² three ways")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument(
        "--max-util-drop",
        type=float,
        default=1.0,
        help="utility budget for the chosen m, in nats of UtilOdds (default 1)",
    )
    p.add_argument(
        "--budget-level",
        type=_level,
        default=0.5,
        help="one-sided confidence that the mean drop over pairs like these stays within the "
        "budget (default 0.5: the fitted drop itself)",
    )
    p.add_argument("--per-pair", action="store_true", help="also fit every pair's own curve")
    p.add_argument("--starts", type=int, default=16, help="SLSQP starts (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bootstrap", type=int, default=0, help="bootstrap resamples for CIs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unisteer.report.fit_outputs import fit_command

    result = fit_command(
        args.sweep,
        args.test,
        args.out,
        max_util_drop=args.max_util_drop,
        per_pair=args.per_pair,
        n_starts=args.starts,
        seed=args.seed,
        bootstrap=args.bootstrap,
        budget_level=args.budget_level,
    )
    summary = {k: result[k] for k in ("r2", "choice") if k in result}
    print(json.dumps(summary, indent=2, default=str))
    print(f"wrote {args.out / 'fits.json'} and the plots in {args.out}")
    return 0
