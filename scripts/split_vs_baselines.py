"""SPLIT against SFT and RePS with error bars: the built-in ``split_vs_baselines`` experiment
for several concepts and seeds, and one table.

Per kind and objective: the fitted PrefOdds gain at the m chosen within the utility budget
(train fit; mean over runs and the range), and the PrefOdds gain and UtilOdds drop measured on
the test pairs at that m, with a 95% interval over seeds and pairs (two-level bootstrap,
:func:`unisteer.evaluate.gains.nested_interval`). Then, per kind, SPLIT minus each baseline in
measured gain, paired by seed and test pair, with its interval. Each run resumes where it
stopped; the table goes to stdout and to ``OUT/table.md`` and ``OUT/table.json``.

    python scripts/split_vs_baselines.py [--concepts archaic pirate] [--seeds 0 1 2]
                                         [--out unisteer-out/split_vs_baselines] [--table-only]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import unisteer
from unisteer.evaluate.gains import mean_interval, nested_interval
from unisteer.experiment import builtin_experiment, run_experiment
from unisteer.files import write_json_atomic, write_text_atomic
from unisteer.report.results import PAIR_GAINS, ExperimentResults

KINDS = ("vector", "lora", "local_weight")
OBJECTIVES = ("sft", "reps", "split")


def rows_of(results: ExperimentResults, concept: str, seed: int) -> list[dict[str, Any]]:
    rows = []
    for m in results.methods:
        choice = m.fit.choice if m.fit.ok else None
        per = m.directory / "eval" / PAIR_GAINS
        gains = pd.read_parquet(per) if per.is_file() else None
        rows.append(
            {
                "concept": concept,
                "seed": seed,
                "kind": m.kind,
                "objective": m.objective,
                "chosen_m": None if choice is None else choice.m,
                "fit_gain": None if choice is None else choice.pref_gain,
                "fit_drop": None if choice is None else choice.util_drop,
                "pairs": gains,
            }
        )
    return rows


def fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def two_level(groups: list[np.ndarray]) -> tuple[float, float]:
    """Over seeds and pairs; with one run only, over its pairs (one level)."""
    return nested_interval(groups) if len(groups) > 1 else mean_interval(groups[0])


def interval(groups: list[np.ndarray]) -> str:
    lo, hi = two_level(groups)
    return f"[{fmt(lo)}, {fmt(hi)}]" + ("" if len(groups) > 1 else " (pairs)")


def table(rows: list[dict[str, Any]], concepts: list[str]) -> tuple[str, list[dict[str, Any]]]:
    lines = [
        "| kind | objective | concept | runs | fitted PrefOdds gain at budget (mean [min, max]) | "
        "measured PrefOdds gain (test) | 95% CI (runs × pairs) | measured UtilOdds drop | "
        "95% CI |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    records = []
    for kind in KINDS:
        for objective in OBJECTIVES:
            for concept in [*concepts, "all"]:
                mine = [
                    r
                    for r in rows
                    if r["kind"] == kind
                    and r["objective"] == objective
                    and (concept == "all" or r["concept"] == concept)
                ]
                if not mine:
                    continue
                fitted = [r["fit_gain"] for r in mine if r["fit_gain"] is not None]
                gains = [r["pairs"]["pref_gain"].to_numpy() for r in mine if r["pairs"] is not None]
                drops = [
                    r["pairs"].loc[r["pairs"]["util_in_domain"], "util_drop"].to_numpy()
                    for r in mine
                    if r["pairs"] is not None
                ]
                g = float(np.mean([x.mean() for x in gains])) if gains else None
                d = float(np.mean([x.mean() for x in drops if x.size])) if drops else None
                rec = {
                    "kind": kind,
                    "objective": objective,
                    "concept": concept,
                    "runs": len(mine),
                    "fits": len(fitted),
                    "fit_gain_mean": float(np.mean(fitted)) if fitted else None,
                    "fit_gain_min": float(np.min(fitted)) if fitted else None,
                    "fit_gain_max": float(np.max(fitted)) if fitted else None,
                    "test_gain": g,
                    "test_gain_ci": list(two_level(gains)) if gains else None,
                    "test_drop": d,
                    "test_drop_ci": list(two_level(drops)) if drops else None,
                }
                records.append(rec)
                fitted_text = (
                    f"{fmt(rec['fit_gain_mean'])} [{fmt(rec['fit_gain_min'])}, "
                    f"{fmt(rec['fit_gain_max'])}]"
                    + (
                        ""
                        if len(fitted) == len(mine)
                        else f" ({len(mine) - len(fitted)} fits failed)"
                    )
                    if fitted
                    else "no fit"
                )
                lines.append(
                    f"| {kind} | {objective} | {concept} | {len(mine)} | {fitted_text} | "
                    f"{fmt(g)} | {interval(gains) if gains else '–'} | {fmt(d)} | "
                    f"{interval(drops) if drops else '–'} |"
                )
    return "\n".join(lines), records


def differences(rows: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """SPLIT minus SFT and minus RePS, per kind, in measured test PrefOdds gain: paired by
    (concept, seed) run and by test pair, then the two-level interval over runs and pairs."""
    lines = [
        "| kind | SPLIT minus | mean difference in measured PrefOdds gain | 95% CI | "
        "runs where SPLIT is ahead |",
        "|---|---|---|---|---|",
    ]
    records = []
    for kind in KINDS:
        for other in ("sft", "reps"):
            groups, ahead, runs = [], 0, 0
            for (concept, seed), _ in pd.DataFrame(rows).groupby(["concept", "seed"]):
                pick = {
                    r["objective"]: r["pairs"]
                    for r in rows
                    if r["kind"] == kind and r["concept"] == concept and r["seed"] == seed
                }
                a, b = pick.get("split"), pick.get(other)
                if a is None or b is None:
                    continue
                both = a.merge(b, on="pair_id", suffixes=("_s", "_o"))
                diff = (both["pref_gain_s"] - both["pref_gain_o"]).to_numpy()
                groups.append(diff)
                runs += 1
                ahead += int(diff.mean() > 0)
            if not groups:
                continue
            mean = float(np.mean([x.mean() for x in groups]))
            lo, hi = two_level(groups)
            records.append(
                {
                    "kind": kind,
                    "versus": other,
                    "mean": mean,
                    "ci": [lo, hi],
                    "ahead": ahead,
                    "runs": runs,
                }
            )
            lines.append(
                f"| {kind} | {other} | {fmt(mean)} | [{fmt(lo)}, {fmt(hi)}]"
                + ("" if runs > 1 else " (pairs)")
                + f" | {ahead} of {runs} |"
            )
    return "\n".join(lines), records


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concepts", nargs="+", default=["archaic", "pirate"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("unisteer-out/split_vs_baselines"))
    ap.add_argument(
        "--table-only", action="store_true", help="rebuild the tables from the finished runs"
    )
    args = ap.parse_args()
    base = builtin_experiment("split_vs_baselines")
    if args.table_only:
        rows, done = [], []
        for seed in args.seeds:
            for concept in args.concepts:
                out = args.out / f"{concept}-seed{seed}"
                if (out / "results.json").is_file():
                    rows += rows_of(ExperimentResults.load(out), concept, seed)
                    done.append(f"{concept}/{seed}")
        write_tables(rows, args, base, done, 0.0)
        print((args.out / "table.md").read_text())
        return
    model, tok = unisteer.load_model(base.model)
    rows: list[dict[str, Any]] = []
    done: list[str] = []
    started = time.perf_counter()
    for seed in args.seeds:  # seed-major: an interrupted study has every concept
        for concept in args.concepts:
            exp = base.replace(data=f"default:{concept}", seed=seed)
            out = args.out / f"{concept}-seed{seed}"
            t = time.perf_counter()
            results = run_experiment(
                exp, out=out, model=model, tokenizer=tok, progress=False, log=lambda _: None
            )
            print(f"{concept} seed {seed}: {time.perf_counter() - t:.0f} s -> {out}", flush=True)
            rows += rows_of(results, concept, seed)
            done.append(f"{concept}/{seed}")
            # the table so far after every run: an interrupted study still leaves one
            write_tables(rows, args, base, done, time.perf_counter() - started)
    print((args.out / "table.md").read_text())


def write_tables(
    rows: list[dict[str, Any]], args: argparse.Namespace, base: Any, done: list[str], wall: float
) -> None:
    concepts = [c for c in args.concepts if any(r["concept"] == c for r in rows)]
    text, records = table(rows, concepts)
    diff_text, diff_records = differences(rows)
    report = (
        f"runs (concept/seed): {', '.join(done)}; {base.train_pairs} training pairs, sweeps on "
        f"{base.sweep_train_pairs} train and {base.test_pairs} test pairs, budget "
        f"{base.max_util_drop:g} nat; wall {wall:.0f} s\n\n{text}\n\n{diff_text}\n"
    )
    write_text_atomic(args.out / "table.md", report)
    write_json_atomic(
        args.out / "table.json", {"runs": done, "methods": records, "split_minus": diff_records}
    )


if __name__ == "__main__":
    main()
