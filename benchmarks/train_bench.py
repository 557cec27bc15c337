"""Training speed: one epoch of the cached trainer against plain forward + backward through
the whole model, on the same batches, measured side by side in one run.

Default model, the default dataset's training split, SPLIT (bidirectional: four rows per pair)
with a vector at the middle layer. Three ways run every step on the same rows and
multipliers, from the same parameters, alternating:

* ``plain``: the whole hooked model forward on the step's rows (prompt and completion), logits
  at every position, and ``backward`` through the whole model (every parameter that requires a
  gradient, as a model loaded from Hugging Face does); the model's gradients are discarded.
  This is the baseline the target is stated against.
* ``frozen``: the same forward, but backward only to the delta (autograd then stops at block
  L): what a careful hand-written trainer does.
* ``cached``: unisteer's trainer, which ran blocks 0..L-1 once before training (timed
  separately as "capture") and runs only blocks L..N, with the head at completion positions.

All three must agree on the first step's loss and gradient.

    python benchmarks/train_bench.py [--rounds 2] [--pairs 128] [--concept optimism]

Ends with ``RESULT train_time_ratio <cached epoch / plain epoch>`` (target <= 0.6); the ratio
against ``frozen`` is printed too.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

import unisteer
from unisteer.core.sites import middle_layer
from unisteer.data import default_split
from unisteer.training.batches import TrainBatch, prepare, row_scores
from unisteer.training.objectives import make_objective
from unisteer.training.trainer import multiplier_drawer, step_generator


def epoch(
    model: Any,
    batches: list[TrainBatch],
    delta: Any,
    runner: Any,
    start: list[Any],
    whole: bool,
) -> tuple[float, float, list[torch.Tensor]]:
    """One epoch of SPLIT steps from the parameters ``start``; (seconds, first loss, first
    gradients)."""
    with torch.no_grad():
        for p, s in zip(delta.parameters(), start, strict=True):
            p.copy_(s)
    objective = make_objective("split")
    optimizer = torch.optim.AdamW(list(delta.parameters()), lr=0.02, weight_decay=0.0)
    grid = [float(x) for x in range(2, 21, 2)]
    first_loss, first_grads = float("nan"), []
    t = time.perf_counter()
    for i, tb in enumerate(batches):
        rows = objective.rows(
            tb.n_pairs, multiplier_drawer(grid, step_generator(0, 0, i)), delta.kind
        )
        loss = objective.loss(rows, row_scores(model, tb, delta, rows, runner))
        if whole:  # through the whole model: every parameter that requires a gradient
            loss.backward()
            model.zero_grad(set_to_none=True)
        else:
            loss.backward(inputs=list(delta.parameters()))
        if i == 0:
            first_loss = float(loss.detach())
            first_grads = [p.grad.clone() for p in delta.parameters() if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(list(delta.parameters()), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - t, first_loss, first_grads


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2, help="ABBA rounds (each runs both ways)")
    ap.add_argument("--pairs", type=int, default=128)
    ap.add_argument("--concept", default="optimism")
    ap.add_argument("--batch-size", type=int, default=4)
    args = ap.parse_args()
    torch.manual_seed(0)
    model, tok = unisteer.load_model()
    train, _ = default_split(args.concept)
    pairs = train[: args.pairs]
    layer = middle_layer(model)
    delta = unisteer.new_delta(model, "vector", layer, tokenizer=tok, init_std=0.04, seed=0)
    start = [p.detach().clone() for p in delta.parameters()]
    t = time.perf_counter()
    cached, runner = prepare(model, tok, pairs, delta, batch_size=args.batch_size, seed=0)
    capture = time.perf_counter() - t
    plain, _ = prepare(model, tok, pairs, delta, batch_size=args.batch_size, seed=0, method="naive")
    assert runner is not None, "the cached path was not usable on this model"
    n_rows = 4 * len(pairs)
    print(
        f"{len(pairs)} pairs ({n_rows} rows per epoch), batches of {args.batch_size} pairs, "
        f"SPLIT vector at layer {layer} of {len(unisteer.find_blocks(model)[1])}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"  capture (blocks 0..N once, no autograd): {capture:.1f} s")
    order: list[str] = []
    for r in range(args.rounds):
        ways = ["plain", "frozen", "cached"]
        order += ways if r % 2 == 0 else ways[::-1]
    times: dict[str, list[float]] = {way: [] for way in order}
    firsts: dict[str, tuple[float, list[torch.Tensor]]] = {}
    for way in order:
        batches, run = (cached, runner) if way == "cached" else (plain, None)
        elapsed, loss, grads = epoch(model, batches, delta, run, start, whole=way == "plain")
        times[way].append(elapsed)
        firsts[way] = (loss, grads)
        print(f"  {way:6s} epoch {elapsed:7.1f} s")
    d_loss = max(abs(firsts[w][0] - firsts["cached"][0]) for w in ("plain", "frozen"))
    d_grad = max(
        float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
        for w in ("plain", "frozen")
        for a, b in zip(firsts[w][1], firsts["cached"][1], strict=True)
    )
    plain_t, frozen_t, cached_t = (min(times[w]) for w in ("plain", "frozen", "cached"))
    ok = d_loss <= 1e-4 and d_grad <= 1e-3
    print(
        f"agreement on the first step: |d loss| {d_loss:.2e}, max relative |d grad| "
        f"{d_grad:.2e} ({'OK' if ok else 'MISMATCH'})"
    )
    print(
        f"plain {plain_t:.1f} s, frozen {frozen_t:.1f} s, cached {cached_t:.1f} s per epoch "
        f"(best of {args.rounds}); cached / frozen = {cached_t / frozen_t:.2f}"
    )
    print(
        f"first epoch including the capture: {(cached_t + capture) / plain_t:.2f} x plain; "
        f"over 3 epochs: {(3 * cached_t + capture) / (3 * plain_t):.2f} x"
    )
    print(f"RESULT train_agreement {max(d_loss, d_grad):.2e}")
    print(f"RESULT train_time_ratio {cached_t / plain_t:.2f}")


if __name__ == "__main__":
    main()
