"""The replay cache: an experiment's sweeps with and without one shared
:class:`unisteer.replay.cache.ReplayCache`, side by side in one run.

What the experiment runner does per method, for several methods at one layer: a coarse sweep,
adaptive rounds of a few points each, a test sweep, and the evaluation at the chosen m (one
point). Without a cache every call pays the fast path's self-check and the capture of its
pairs; with one, the check runs once per kind of site and each batch is captured once per
layer. A one-point call (the evaluation) takes the naive path either way, so that a number
never depends on what the process ran before. Every call must be identical bit for bit.

    python benchmarks/cache_bench.py [--methods 3] [--pairs 16] [--points 9] [--concept archaic]
                                     [--rounds 2]

Ends with ``RESULT replay_cache_speedup <time without / time with>`` and
``RESULT replay_cache_max_difference <max |difference| over the calls of several points>``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

import unisteer
from unisteer.data import default_split
from unisteer.replay.cache import ReplayCache
from unisteer.scoring.grid import symmetric_grid


def calls(points: int) -> list[tuple[str, list[float]]]:
    """The sweep calls of one method: (split, multipliers), as the experiment runner makes them
    with ``adaptive = true`` (two rounds of two points on the train pairs)."""
    coarse = symmetric_grid(60.0, points)
    step = coarse[1] - coarse[0]
    return [
        ("train", coarse),
        ("train", [coarse[1] + step / 2, coarse[-2] - step / 2]),
        ("train", [coarse[1] + step / 4, coarse[-2] - step / 4]),
        ("test", coarse),
        ("test", [coarse[-2] - step / 4]),  # the evaluation at the chosen m
    ]


def run(model, tok, splits, deltas, points, cache):  # type: ignore[no-untyped-def]
    tables: list[pd.DataFrame] = []
    for delta in deltas:
        for split, ms in calls(points):
            result = unisteer.sweep(
                model, tok, splits[split], delta, ms, progress=False, cache=cache
            )
            tables.append(result.table)
    return tables  # one table per call: several-point calls must match bit for bit


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", type=int, default=3, help="vector deltas at the middle layer")
    ap.add_argument("--pairs", type=int, default=16, help="train and test pairs each")
    ap.add_argument("--points", type=int, default=9, help="coarse grid points")
    ap.add_argument("--concept", default="archaic")
    ap.add_argument("--rounds", type=int, default=2, help="2: ABBA (drift cancels), 1: AB")
    args = ap.parse_args()
    torch.manual_seed(0)
    model, tok = unisteer.load_model()
    train, test = default_split(args.concept)
    splits = {"train": train[: args.pairs], "test": test[: args.pairs]}
    layer = len(unisteer.find_blocks(model)[1]) // 2
    deltas = []
    for _ in range(args.methods):
        delta = unisteer.new_delta(model, "vector", layer, tokenizer=tok)
        with torch.no_grad():
            delta.bias_.copy_(torch.randn(delta.d_out))
            delta.bias_.mul_(1.0 / delta.bias_.norm())
        deltas.append(delta)
    n_calls = args.methods * len(calls(args.points))
    print(
        f"{args.methods} methods x {len(calls(args.points))} sweep calls ({n_calls} in all), "
        f"{args.pairs} train + {args.pairs} test pairs, {args.points} coarse points, "
        f"vector at layer {layer}, torch threads {torch.get_num_threads()}"
    )
    times: dict[str, float] = {}
    tables: dict[str, list[pd.DataFrame]] = {}
    order = ["without", "with", "with", "without"][: 2 * args.rounds]  # ABBA: drift cancels
    for way in order:
        cache = ReplayCache(model) if way == "with" else None
        t = time.perf_counter()
        table = run(model, tok, splits, deltas, args.points, cache)
        elapsed = time.perf_counter() - t
        times[way] = min(times.get(way, float("inf")), elapsed)
        if way in tables:
            assert all(a.equals(b) for a, b in zip(tables[way], table, strict=True)), way
        tables[way] = table
        extra = f" (captures: {cache.misses} made, {cache.hits} reused)" if cache else ""
        print(f"  {way:7s} cache {elapsed:7.1f} s{extra}")
    columns = ("pref_odds", "util_odds", "loss_pos", "loss_neg")
    many = one = 0.0
    for a, b in zip(tables["with"], tables["without"], strict=True):
        d = max(float(np.abs(a[c].to_numpy() - b[c].to_numpy()).max()) for c in columns)
        if a["m"].nunique() > 1:
            many = max(many, d)
        else:
            one = max(one, d)
    assert many == 0.0, f"calls of several points differ with the cache: {many:.2e}"
    assert one == 0.0, f"the one-point evaluation differs with the cache: {one:.2e}"
    speedup = times["without"] / times["with"]
    print(f"best of {args.rounds}: without {times['without']:.1f} s, with {times['with']:.1f} s")
    print(f"RESULT replay_cache_speedup {speedup:.2f}")
    print(f"RESULT replay_cache_max_difference {max(many, one):.2e}")


if __name__ == "__main__":
    main()
