"""Mean test PrefOdds and UtilOdds of trained deltas at m in {-2, -1, 0, 1, 2} x a unit.

The unit is the median of the delta's training multipliers (11 for a vector trained on
{2, ..., 20}, 1.1 for LoRA / local weight on {0.2, ..., 2.0}); for DiffMean, which has no
training grid, it is the vector's own scale ‖h‖/‖v‖. Reads the deltas an experiment trained
(``OUT/methods/NAME/delta``) and scores the test split of the experiment's data.

    python scripts/trainer_evidence.py unisteer-out/default [--data default:optimism]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import pandas as pd

import unisteer
from unisteer.data import load_pairs
from unisteer.scoring.sweep import sweep


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path, help="an experiment's output folder")
    ap.add_argument("--data", default="default:optimism")
    ap.add_argument("--pairs", type=int, default=32, help="test pairs to score")
    args = ap.parse_args()
    model, tok = unisteer.load_model()
    _, test = load_pairs(args.data).fixed_split()
    test = test[: args.pairs]
    rows = []
    for d in sorted((args.out / "methods").iterdir()):
        delta = unisteer.load_delta(d / "delta", model, tokenizer=tok)
        grid = delta.meta.get("train_multipliers")
        unit = statistics.median(grid) if grid else float(delta.meta["unit"])
        ms = [k * unit for k in (-2, -1, 0, 1, 2)]
        means = sweep(model, tok, test, delta, ms, progress=False).means()
        for k, (_, r) in zip((-2, -1, 0, 1, 2), means.iterrows(), strict=True):
            rows.append(
                {
                    "method": d.name,
                    "k": k,
                    "m": r["m"],
                    "pref_odds": r["pref_odds"],
                    "util_odds": r["util_odds"],
                }
            )
        print(d.name, "done", flush=True)
    table = pd.DataFrame(rows)
    pref = table.pivot(index="method", columns="k", values="pref_odds")
    util = table.pivot(index="method", columns="k", values="util_odds")
    unit_of = table[table.k == 1].set_index("method")["m"]
    print(f"\n{len(test)} test pairs of {args.data}; columns: m = k x unit")
    print("\nmean PrefOdds\n" + pref.assign(unit=unit_of).round(2).to_string())
    print("\nmean UtilOdds\n" + util.assign(unit=unit_of).round(2).to_string())
    print("\nchange from m = 0 (PrefOdds / UtilOdds)")
    for method in pref.index:
        cells = [
            f"{k:+d}: {pref.loc[method, k] - pref.loc[method, 0]:+6.2f} / "
            f"{util.loc[method, k] - util.loc[method, 0]:+7.2f}"
            for k in (-2, -1, 1, 2)
        ]
        print(f"{method:20s} " + "   ".join(cells))


if __name__ == "__main__":
    main()
