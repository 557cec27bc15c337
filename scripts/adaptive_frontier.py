"""The preference–utility frontier of a fixed multiplier, a static KL calibration and the
adaptive ``kl_budget`` controller (issue 19; arXiv 2602.02343 §7, open question 3), on the
default model, for a DiffMean and a SPLIT vector on two concepts with room to steer.

Per concept and method: the delta is trained on 32 train pairs (the default experiment's
sizes), then on the test pairs

* ``fixed``: the sweep at ``linspace(0, m_max, 9)`` (``m_max``: the positive end of the delta's
  grid),
* ``kl_budget``: teacher-forced scoring with ``kl_budget(kappa, m_max, K)`` for each kappa,
* ``static_kl``: one KL profile on rollouts of the *train* queries (greedy, 24 tokens), the m
  where its 95th percentile crosses each kappa, scored like ``fixed``,

each point as (mean UtilOdds drop, mean PrefOdds gain) against m = 0. Writes
``OUT/frontier.csv``, ``OUT/frontier.png`` and ``OUT/frontier.md`` (the table for
docs/results.md). About 15 minutes on 2 cores::

    python scripts/adaptive_frontier.py [--concepts archaic formality] [--pairs 12]
                                        [--out docs/adaptive]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import unisteer
from unisteer.control import choose_static, kl_profile, sweep_kappa
from unisteer.data import default_split

KAPPAS = [0.0, 0.02, 0.05, 0.2, 0.5, 2.0, math.inf]


def gains(table: pd.DataFrame, key: str, base: pd.DataFrame) -> pd.DataFrame:
    """Per value of ``key``: the mean PrefOdds gain and UtilOdds drop against ``base`` (m = 0)."""
    p0, u0 = float(base["pref_odds"].mean()), float(base["util_odds"].mean())
    g = table.groupby(key).agg(pref=("pref_odds", "mean"), util=("util_odds", "mean"))
    out = pd.DataFrame({"pref_gain": g["pref"] - p0, "util_drop": u0 - g["util"]})
    if "mean_m" in table:
        out["mean_m"] = table.groupby(key)["mean_m"].mean()
    return out.reset_index()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concepts", nargs="+", default=["archaic", "formality"])
    ap.add_argument("--pairs", type=int, default=12, help="test pairs scored per point")
    ap.add_argument("--k", type=int, default=8, help="kl_budget's candidates")
    ap.add_argument("--out", type=Path, default=Path("docs/adaptive"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model, tok = unisteer.load_model()
    layer = len(unisteer.find_blocks(model)[1]) // 2
    rows = []
    t0 = time.perf_counter()
    for concept in args.concepts:
        train, test = default_split(concept)
        pairs = test[: args.pairs]
        for objective in ("diffmean", "split"):
            extra = {} if objective == "diffmean" else {"epochs": 1, "batch_size": 2}
            delta = unisteer.train(model, tok, train[:32], kind="vector", objective=objective,
                                   layer=layer, progress=False, **extra)  # fmt: skip
            m_max = float(max(delta.meta["grid"]))
            grid = [float(x) for x in np.linspace(0.0, m_max, 9)]
            fixed = unisteer.sweep(model, tok, pairs, delta, grid, progress=False).table
            base = fixed[fixed["m"] == 0.0]
            for _, r in gains(fixed, "m", base).iterrows():
                rows.append({"concept": concept, "method": objective, "controller": "fixed",
                             "setting": r["m"], "m": r["m"], **r.drop("m")})  # fmt: skip
            adaptive = sweep_kappa(model, tok, pairs, delta, KAPPAS, m_max, k=args.k,
                                   progress=False)  # fmt: skip
            for _, r in gains(adaptive, "kappa", base).iterrows():
                rows.append({"concept": concept, "method": objective, "controller": "kl_budget",
                             "setting": r["kappa"], "m": r["mean_m"],
                             "pref_gain": r["pref_gain"], "util_drop": r["util_drop"]})  # fmt: skip
            queries = [p.query for p in train[:8]]
            profile = kl_profile(model, tok, queries, delta, m_max, points=9, max_new_tokens=24)
            static_ms = sorted({round(choose_static(*profile, kappa), 6) for kappa in KAPPAS})
            ms = sorted({0.0, *static_ms})
            static = unisteer.sweep(model, tok, pairs, delta, ms, progress=False)
            by_m = gains(static.table, "m", base).set_index("m")
            for kappa in KAPPAS:
                m = round(choose_static(*profile, kappa), 6)
                r = by_m.loc[m]
                rows.append({"concept": concept, "method": objective, "controller": "static_kl",
                             "setting": kappa, "m": m, "pref_gain": r["pref_gain"],
                             "util_drop": r["util_drop"]})  # fmt: skip
            shown = [round(x, 3) for x in profile[1]]
            print(f"{concept} {objective}: m_max {m_max:.2f}, KL p95 profile {shown} "
                  f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    frame = pd.DataFrame(rows)
    frame.to_csv(args.out / "frontier.csv", index=False)
    fig, axes = plt.subplots(len(args.concepts), 2, figsize=(10, 4 * len(args.concepts)),
                             squeeze=False)  # fmt: skip
    style = {"fixed": ("o-", "#1f77b4"), "static_kl": ("s--", "#2ca02c"),
             "kl_budget": ("^-", "#d62728")}  # fmt: skip
    for i, concept in enumerate(args.concepts):
        for j, objective in enumerate(("diffmean", "split")):
            ax = axes[i][j]
            sub = frame[(frame["concept"] == concept) & (frame["method"] == objective)]
            for name, (marker, colour) in style.items():
                pts = sub[sub["controller"] == name].sort_values("util_drop")
                ax.plot(pts["util_drop"], pts["pref_gain"], marker, color=colour, label=name)
            ax.set_title(f"{concept}: {objective} vector")
            ax.set_xlabel("UtilOdds drop (nats)")
            ax.set_ylabel("PrefOdds gain (nats)")
            ax.grid(alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "frontier.png", dpi=110)
    with open(args.out / "frontier.md", "w") as f:
        f.write("| concept | method | controller | setting | m (mean m_t) | PrefOdds gain | "
                "UtilOdds drop |\n|---|---|---|---|---|---|---|\n")  # fmt: skip
        for _, r in frame.iterrows():
            f.write(f"| {r['concept']} | {r['method']} | {r['controller']} | {r['setting']:g} | "
                    f"{r['m']:.2f} | {r['pref_gain']:.3f} | {r['util_drop']:.3f} |\n")  # fmt: skip
    print(f"wrote {args.out}/frontier.csv, .png, .md in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
