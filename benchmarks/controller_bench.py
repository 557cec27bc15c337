"""The cost of an adaptive multiplier: generation under ``kl_budget(kappa, m_max, K)`` (each
steered step runs K candidate rows and the shared unsteered row) against fixed-m generation
(``unisteer.generate``, one row per prompt), same prompts, same tokens, one run.

    python benchmarks/controller_bench.py [--k 8] [--prompts 8] [--tokens 32] [--rounds 2]

Ends with ``RESULT controller_cost_ratio <kl_budget time / fixed-m time>`` (the target is at
most K + 1) and ``RESULT controller_k <K>``.
"""

from __future__ import annotations

import argparse
import time

import torch

import unisteer
from unisteer.control.controllers import fixed, kl_budget
from unisteer.control.generate import generate_controlled
from unisteer.data import default_split


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--kappa", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=2, help="2: ABBA (drift cancels), 1: AB")
    args = ap.parse_args()
    model, tok = unisteer.load_model()
    layer = len(unisteer.find_blocks(model)[1]) // 2
    train, test = default_split("archaic")
    delta = unisteer.train(model, tok, train[:16], kind="vector", objective="diffmean",
                           layer=layer, progress=False)  # fmt: skip
    m_max = 2.0 * float(delta.meta["unit"])
    prompts = [p.query for p in test[: args.prompts]]
    n = args.tokens

    def fixed_m() -> None:
        unisteer.generate(model, tok, prompts, delta=delta, m=m_max, max_new_tokens=n,
                          batch_size=len(prompts))  # fmt: skip

    def ours_fixed() -> None:
        generate_controlled(model, tok, prompts, delta, fixed(m_max), max_new_tokens=n,
                            batch_size=len(prompts))  # fmt: skip

    def adaptive() -> None:
        generate_controlled(model, tok, prompts, delta, kl_budget(args.kappa, m_max, args.k),
                            max_new_tokens=n, batch_size=len(prompts))  # fmt: skip

    runs = {"fixed-m generate": fixed_m, "controller fixed": ours_fixed, "kl_budget": adaptive}
    print(f"{len(prompts)} prompts x {n} new tokens, DiffMean vector at layer {layer}, "
          f"m_max {m_max:.2f}, K = {args.k}, kappa {args.kappa}, torch threads "
          f"{torch.get_num_threads()}")  # fmt: skip
    times: dict[str, float] = {}
    order = list(runs) + list(reversed(runs)) if args.rounds == 2 else list(runs)
    for name in order:
        t = time.perf_counter()
        runs[name]()
        elapsed = time.perf_counter() - t
        times[name] = min(times.get(name, float("inf")), elapsed)
        print(f"  {name:18s} {elapsed:6.1f} s")
    ratio = times["kl_budget"] / times["fixed-m generate"]
    print(
        f"kl_budget costs {ratio:.2f}x fixed-m generation (target <= K + 1 = {args.k + 1}); "
        f"our fixed-m loop {times['controller fixed'] / times['fixed-m generate']:.2f}x"
    )
    print(f"RESULT controller_cost_ratio {ratio:.2f}")
    print(f"RESULT controller_k {args.k}")


if __name__ == "__main__":
    main()
