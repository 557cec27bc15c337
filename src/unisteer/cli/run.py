"""``unisteer run [EXPERIMENT]``: train, sweep, fit and report (the main job)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run an experiment: train every method, sweep m, fit the curves, write a report",
    )
    p.add_argument(
        "experiment",
        nargs="?",
        default="default",
        help="an experiment TOML file, or a built-in one: "
        "default, dynamics, fit_validation, layers, multiturn, split_vs_baselines",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_true", help="a few pairs, one epoch, 9-point sweeps (minutes)"
    )
    size.add_argument("--full", action="store_true", help="every pair of the data, 21 points")
    p.add_argument("--out", type=Path, help="output folder (default: the experiment's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from unisteer.experiment import load_experiment, run_experiment
    from unisteer.experiment.config import with_profile

    started = time.perf_counter()
    exp = load_experiment(args.experiment)
    sized = with_profile(exp, "quick" if args.quick else "full" if args.full else "normal")
    left_out = [m.name for m in exp.methods if m not in sized.methods]
    if left_out:
        print(
            f"--quick: {len(sized.methods)} of {len(exp.methods)} methods (every kind, objective "
            f"and layer once); left out: {', '.join(left_out)}",
            flush=True,
        )
    exp = sized
    results = run_experiment(exp, out=args.out, progress=not args.no_progress)
    if results is None:  # a torchrun rank other than 0: rank 0 writes and prints the report
        return 0
    out = Path(args.out if args.out is not None else exp.output)
    from unisteer.report import concepts, html

    print()
    if isinstance(results, concepts.ConceptsResults):
        print(concepts.summary_markdown(results))
    else:
        print(html.summary_markdown(results))
    print(f"report: {out / 'report.html'}")
    print(f"summary: {out / 'summary.md'}, every number: {out / 'results.json'}")
    print(
        f"wall time {time.perf_counter() - started:.0f} s, "
        f"peak memory {results.peak_memory_mb:.0f} MiB"
    )
    return 0
