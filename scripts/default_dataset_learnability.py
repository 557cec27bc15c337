"""Is the default dataset learnable? DiffMean on the default model, scored on the test split.

For each concept: a DiffMean vector at the residual output of the middle block (from the
training split), then the mean test PrefOdds and UtilOdds over a fine grid of m near 0 (in
units of the vector's own scale ‖h‖/‖v‖). It reports the largest PrefOdds gain over m = 0
among multipliers where mean UtilOdds dropped by less than 1 nat.

    python scripts/default_dataset_learnability.py [--span 0.3] [--points 13]
"""

from __future__ import annotations

import argparse

import numpy as np

import unisteer
from unisteer.core.sites import middle_layer
from unisteer.data import DEFAULT_CONCEPTS, default_split
from unisteer.scoring.sweep import sweep
from unisteer.training.objectives import diffmean


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--span", type=float, default=0.3, help="grid half-width in units of |h|/|v|")
    ap.add_argument("--points", type=int, default=13)
    args = ap.parse_args()
    model, tok = unisteer.load_model()
    layer = middle_layer(model)
    for concept in DEFAULT_CONCEPTS:
        train, test = default_split(concept)
        delta = diffmean(model, tok, train, layer=layer)
        unit = float(delta.meta["unit"])
        ms = [float(x) for x in np.linspace(-args.span, args.span, args.points) * unit]
        ms[len(ms) // 2] = 0.0
        means = sweep(model, tok, test, delta, ms, progress=False).means()
        base = means[means.m == 0.0].iloc[0]
        means["d_pref"] = means.pref_odds - base.pref_odds
        means["d_util"] = means.util_odds - base.util_odds
        print(
            f"\n{concept}: layer {layer}, |v| = {float(delta.bias_.detach().norm()):.2f}, "
            f"median |h| = {delta.meta['median_norm']:.1f}, unit |h|/|v| = {unit:.2f}"
        )
        cols = ["m", "pref_odds", "util_odds", "d_pref", "d_util", "n_out_of_domain"]
        print(means[cols].to_string(index=False, float_format=lambda x: f"{x:.2f}"))
        ok = means[means.d_util > -1.0]
        best = ok.loc[ok.d_pref.idxmax()]
        print(
            f"RESULT {concept} best_pref_gain {best.d_pref:.2f} at m = {best.m:.2f} "
            f"(UtilOdds change {best.d_util:+.2f})"
        )


if __name__ == "__main__":
    main()
