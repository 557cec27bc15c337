"""``unisteer sweep``: PrefOdds and UtilOdds of a saved delta over a grid of m."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from unisteer.cli.data import (
    add_length_options,
    add_source_options,
    check_length_options,
    load_source,
    pick_split,
    within_limits,
)
from unisteer.data.pairs import PairSet
from unisteer.errors import UsageError


def register(sub: Any) -> None:
    from unisteer.model import DEFAULT_MODEL

    p = sub.add_parser("sweep", help="PrefOdds and UtilOdds of a saved delta over a grid of m")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument(
        "--delta", required=True, help="a folder written by save_delta or save_steering_set"
    )
    p.add_argument("--data", required=True, help="a data file or default[:CONCEPT]")
    add_source_options(p)
    add_length_options(p)
    p.add_argument(
        "--split",
        choices=["all", "train", "test"],
        default="all",
        help="use the split recorded in the data (default: all pairs)",
    )
    p.add_argument("--ms", help="LO:HI:N or a comma list (default: the delta's own grid)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--reduction", choices=["sum", "mean"], default="sum")
    p.add_argument(
        "--include-suffix",
        action="store_true",
        help="count the end-of-turn tokens as part of each completion",
    )
    p.add_argument("--positions", choices=["all", "prompt", "completion"], default="all")
    p.add_argument(
        "--controller",
        choices=["fixed", "kl_budget"],
        default="fixed",
        help="fixed: one m per point (--ms); kl_budget: m_t chosen per token under a KL budget "
        "per point (--kappas), written as kappa_sweep.parquet",
    )
    p.add_argument("--kappas", help="with --controller kl_budget: a comma list of KL budgets")
    p.add_argument("--m-max", type=float, help="kl_budget's largest m (default: the grid's end)")
    p.add_argument("--k", type=int, default=8, help="kl_budget's candidate multipliers")
    p.add_argument(
        "--memory-mb",
        type=float,
        default=1024.0,
        help="activation memory per call (sets the batch shapes)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unisteer.files import OutputLock, check_output_dir
    from unisteer.scoring.grid import parse_grid

    given: list[float] | None = None
    if args.ms is not None:  # checked before the model loads
        try:
            given = parse_grid(args.ms)
        except ValueError as e:
            raise UsageError(f"argument --ms: {e}") from None
    if not args.memory_mb > 0:
        raise UsageError(f"argument --memory-mb: must be more than 0, got {args.memory_mb}")
    check_length_options(args)
    kappas = _kappas(args)
    out = check_output_dir(args.out, "--out folder")
    with OutputLock(out):
        return _sweep(args, out, given, kappas)


def _kappas(args: argparse.Namespace) -> list[float] | None:
    """The KL budgets of ``--controller kl_budget`` (checked before the model loads)."""
    import math

    if args.controller == "fixed":
        if args.kappas is not None or args.m_max is not None:
            raise UsageError("--kappas and --m-max go with --controller kl_budget")
        return None
    if args.kappas is None:
        raise UsageError("--controller kl_budget needs --kappas (a comma list, inf allowed)")
    try:
        kappas = [float(x) for x in args.kappas.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"argument --kappas: expected numbers, got {args.kappas!r}") from None
    if not kappas or any(not k >= 0 for k in kappas):
        raise UsageError(f"argument --kappas: budgets are >= 0 (inf allowed), got {args.kappas}")
    if args.m_max is not None and (not math.isfinite(args.m_max) or args.m_max == 0):
        raise UsageError(f"argument --m-max: a finite number other than 0, got {args.m_max}")
    if args.k < 2:
        raise UsageError(f"argument --k: at least 2 (0 and m_max), got {args.k}")
    return kappas


def _sweep(
    args: argparse.Namespace, out_dir: Path, given: list[float] | None, kappas: list[float] | None
) -> int:
    from unisteer.core.io import load_steerable
    from unisteer.model.load import load_model
    from unisteer.scoring.sweep import sweep

    # data problems are reported before the model loads
    read = load_source(args, args.data, strict=not args.lenient)
    unreadable = [str(x) for x in read.problems]
    pairs = pick_split(PairSet(read, name=read.name), args.split)  # listed once, below
    model, tokenizer = load_model(args.model)
    delta = load_steerable(args.delta, model, tokenizer=tokenizer)
    pairs = within_limits(args, pairs, model, tokenizer, include_suffix=args.include_suffix)
    if not len(pairs):
        raise UsageError(f"{args.data}: no pairs left to sweep (all longer than the token limit)")
    if given is not None:
        ms = given
    elif isinstance(delta.meta.get("grid"), list):
        ms = [float(x) for x in delta.meta["grid"]]
    else:
        raise UsageError(f"{args.delta} records no multiplier grid; give --ms LO:HI:N")
    if kappas is not None:
        return _kappa_sweep(args, out_dir, model, tokenizer, pairs, delta, ms, kappas)
    result = sweep(
        model,
        tokenizer,
        pairs,
        delta,
        ms,
        reduction=args.reduction,
        include_suffix=args.include_suffix,
        positions=args.positions,
        memory_budget=int(args.memory_mb * (1 << 20)),
        progress=not args.no_progress,
    )
    skipped = unreadable + [str(x) for x in pairs.problems]
    if skipped:
        result.meta["skipped"] = skipped
    out = result.save(out_dir)
    columns = ["m", "n", "pref_odds", "pref_odds_sem", "util_odds", "util_odds_sem"]
    columns.append("n_out_of_domain")
    print(result.means()[columns].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"wrote {out / 'sweep.parquet'}, {out / 'means.parquet'} and {out / 'sweep.json'}")
    return 0


def _kappa_sweep(
    args: argparse.Namespace, out_dir: Path, model: Any, tokenizer: Any, pairs: Any, delta: Any,
    ms: list[float], kappas: list[float],
) -> int:  # fmt: skip
    from unisteer.control import sweep_kappa
    from unisteer.files import write_json_atomic, write_parquet_atomic

    m_max = args.m_max if args.m_max is not None else max(ms)
    table = sweep_kappa(
        model, tokenizer, list(pairs), delta, kappas, m_max, k=args.k, positions=args.positions,
        include_suffix=args.include_suffix, progress=not args.no_progress,
    )  # fmt: skip
    write_parquet_atomic(out_dir / "kappa_sweep.parquet", table)
    meta = {"controller": "kl_budget", "kappas": kappas, "m_max": m_max, "k": args.k,
            "positions": args.positions, "n_pairs": len(pairs)}  # fmt: skip
    write_json_atomic(out_dir / "kappa_sweep.json", meta)
    means = table.groupby("kappa")[["pref_odds", "util_odds", "mean_m"]].mean().reset_index()
    print(means.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"wrote {out_dir / 'kappa_sweep.parquet'} and {out_dir / 'kappa_sweep.json'}")
    return 0
