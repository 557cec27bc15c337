"""``unisteer sweep``: PrefOdds and UtilOdds of a saved delta over a grid of m."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from unisteer.cli.control import add_controller_options, controller_options
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
    add_controller_options(p, "--ms")
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
    control = controller_options(args)
    out = check_output_dir(args.out, "--out folder")
    with OutputLock(out):
        return _sweep(args, out, given, control)


def _sweep(args: argparse.Namespace, out_dir: Path, given: list[float] | None, control: Any) -> int:
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
    if control is not None:
        return _kappa_sweep(args, out_dir, model, tokenizer, pairs, delta, ms, *control)
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
    ms: list[float], spec: Any, kappas: list[float],
) -> int:  # fmt: skip
    from unisteer.control import sweep_controller
    from unisteer.files import write_json_atomic, write_parquet_atomic

    spec = spec.with_m_max(max(ms))
    table = sweep_controller(
        model, tokenizer, list(pairs), delta, spec, kappas, positions=args.positions,
        include_suffix=args.include_suffix, progress=not args.no_progress,
    )  # fmt: skip
    write_parquet_atomic(out_dir / "kappa_sweep.parquet", table)
    meta = {"controller": spec.name, **spec.describe(), "kappas": kappas,
            "positions": args.positions, "n_pairs": len(pairs)}  # fmt: skip
    write_json_atomic(out_dir / "kappa_sweep.json", meta)
    means = table.groupby("kappa")[["pref_odds", "util_odds", "mean_m"]].mean().reset_index()
    print(means.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"wrote {out_dir / 'kappa_sweep.parquet'} and {out_dir / 'kappa_sweep.json'}")
    return 0
