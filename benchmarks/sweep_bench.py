"""Sweep speed: the naive way against ``unisteer.scoring.sweep``, measured side by side in one run.

Default model, the default dataset's test split (32 pairs of one concept), a vector delta at the
middle layer, 21 multipliers. The naive way is one hooked full forward pass per multiplier over
a batch of pairs (A_p and A_n in the same batch, the same length buckets), which is what the
steering-vectors library and most scripts do. The two run alternately (ABBA) and must agree:
max |difference| of PrefOdds and UtilOdds <= 1e-4.

    python benchmarks/sweep_bench.py [--rounds 2] [--concept optimism] [--pairs 32]
                                     [--dtype float32|bfloat16]

Ends with ``RESULT sweep_speedup <naive time / fast time>``. With ``--dtype bfloat16`` the
model is loaded in bfloat16, the agreement bar is the naive path's own change across batchings
(measured in the same run: the naive path at m = 0 on batches of 16 pairs and of 4), and the
result lines are ``sweep_speedup_bf16`` / ``sweep_agreement_bf16``. With ``--arch bloom``
(or ``cohere``, ``granite``: ALiBi and logit scaling) the default model is replaced by a random
model of that architecture, 8 blocks of width 384, with the default tokenizer's vocabulary:
its numbers mean nothing, but the fast path must agree with the naive one on it; the result
lines get an ``_<arch>`` suffix.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

import unisteer
from unisteer.core.sites import site_is_block_output
from unisteer.data import default_split
from unisteer.data.tokens import encode_pairs, pad_id, pair_batch
from unisteer.model.memory import row_bytes
from unisteer.replay.prefix import shared_start
from unisteer.scoring.grid import symmetric_grid
from unisteer.scoring.odds import pref_odds, util_odds
from unisteer.scoring.sweep import (
    DEFAULT_MEMORY_BUDGET,
    length_buckets,
    naive_losses,
    sweep,
)


def matmul_gflops(n: int = 1536, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def naive_sweep(model, tok, pairs, delta, ms):  # type: ignore[no-untyped-def]
    encoded = encode_pairs(tok, pairs)
    buckets = length_buckets(
        encoded, lambda w: DEFAULT_MEMORY_BUDGET // (2 * row_bytes(model, w, w)), 16
    )
    loss = np.zeros((len(pairs), len(ms), 2))
    for indices in buckets:
        batch = pair_batch(encoded, indices, pad_id(tok))
        for j, m in enumerate(ms):
            nll = naive_losses(model, batch, delta, m)
            loss[indices, j, 0] = nll[0::2].numpy()
            loss[indices, j, 1] = nll[1::2].numpy()
    lp, ln = loss[..., 0].reshape(-1), loss[..., 1].reshape(-1)
    return pref_odds(lp, ln), util_odds(lp, ln)[0], encoded


def float32_floor(model, tok, pairs) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """How far each float32 path is from a float64 forward pass, at m = 0, on these pairs:
    (naive, fast) max abs difference of the completion NLL sums. The context for the
    agreement check: two float32 paths cannot agree better than each is accurate."""
    import copy

    from unisteer.replay.base import ReplayInput
    from unisteer.replay.logprob import completion_targets, row_nll
    from unisteer.replay.prefix import PrefixRunner

    encoded = encode_pairs(tok, pairs)
    batch = pair_batch(encoded, list(range(len(pairs))), pad_id(tok))
    naive32 = naive_losses(model, batch, None, 0.0)
    runner = PrefixRunner(model, len(unisteer.find_blocks(model)[1]) // 2)
    hidden = runner.rec.block_input(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    cap = runner.capture(ReplayInput(encoded, batch, pad_id(tok), hidden))
    assert cap is not None
    wide = copy.deepcopy(model).double()
    with torch.no_grad():
        logits = wide(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    predicts, targets = completion_targets(batch)
    logp = torch.log_softmax(logits, -1)[predicts].gather(-1, targets[:, None])[:, 0]
    exact = row_nll(logp, predicts)
    return float((naive32 - exact).abs().max()), float((cap.base - exact).abs().max())


#: Random stand-ins for architectures whose forward does what the default model's does not.
ARCHS: dict[str, dict[str, Any]] = {
    "bloom": {"n_layer": 8, "n_head": 6},  # ALiBi, [batch * heads, 1, T]
    "cohere": {
        "num_hidden_layers": 8, "num_attention_heads": 6, "num_key_value_heads": 2,
        "intermediate_size": 1024, "logit_scale": 0.0625, "tie_word_embeddings": True,
    },
    "granite": {
        "num_hidden_layers": 8, "num_attention_heads": 6, "num_key_value_heads": 2,
        "intermediate_size": 1024, "logits_scaling": 8.0, "residual_multiplier": 0.22,
    },
}  # fmt: skip


def random_model(arch: str, tok, dtype):  # type: ignore[no-untyped-def]
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        arch,
        vocab_size=len(tok),
        hidden_size=384,
        pad_token_id=pad_id(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **ARCHS[arch],
    )
    return AutoModelForCausalLM.from_config(config, dtype=dtype).eval()


def naive_spread(model, tok, pairs) -> float:  # type: ignore[no-untyped-def]
    """How much the naive path's own NLL sums move at m = 0 when the same pairs are batched 16
    at a time or 4 at a time: the rounding of the model's dtype."""
    encoded = encode_pairs(tok, pairs)
    pad = pad_id(tok)
    whole = naive_losses(model, pair_batch(encoded, range(len(pairs)), pad), None, 0.0)
    parts = [
        naive_losses(model, pair_batch(encoded, range(i, min(i + 4, len(pairs))), pad), None, 0.0)
        for i in range(0, len(pairs), 4)
    ]
    return float((torch.cat(parts) - whole).abs().max())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2, help="ABBA rounds (each runs both ways)")
    ap.add_argument("--concept", default="optimism")
    ap.add_argument("--pairs", type=int, default=32, help="test pairs to sweep (at most 32)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--arch", choices=sorted(ARCHS), help="a random model of this architecture")
    args = ap.parse_args()
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    model, tok = unisteer.load_model(dtype=dtype)
    if args.arch:
        model = random_model(args.arch, tok, dtype)
    _, test = default_split(args.concept)
    test = test[: args.pairs]
    layer = len(unisteer.find_blocks(model)[1]) // 2
    delta = unisteer.new_delta(model, "vector", layer, tokenizer=tok)
    with torch.no_grad():
        delta.bias_.copy_(torch.randn(delta.d_out))
        delta.bias_.mul_(1.0 / delta.bias_.norm())
    ms = symmetric_grid(60.0, 21)  # a unit vector up to ~0.4x the residual norm
    print(
        f"{len(test)} pairs x {len(ms)} multipliers, vector at layer {layer}, "
        f"{args.dtype}, {args.arch or 'default model'}, torch threads {torch.get_num_threads()}"
    )

    times: dict[str, list[float]] = {"naive": [], "fast": []}
    results: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    order = []
    for r in range(args.rounds):
        order += ["naive", "fast"] if r % 2 == 0 else ["fast", "naive"]
    encoded = None
    for way in order:
        t = time.perf_counter()
        if way == "naive":
            pref, util, encoded = naive_sweep(model, tok, test, delta, ms)
        else:
            res = sweep(model, tok, test, delta, ms, progress=False)
            pref, util = res.table.pref_odds.to_numpy(), res.table.util_odds.to_numpy()
            way_name = f"fast ({res.meta['method']} runner)"
        elapsed = time.perf_counter() - t
        times[way].append(elapsed)
        results[way] = (pref, util)
        print(f"  {way if way == 'naive' else way_name:5s} {elapsed:7.1f} s")

    d_pref = float(np.nanmax(np.abs(results["naive"][0] - results["fast"][0])))
    d_util = float(np.nanmax(np.abs(results["naive"][1] - results["fast"][1])))
    naive_t, fast_t = min(times["naive"]), min(times["fast"])
    assert encoded is not None
    seq_tokens = sum(len(a.input_ids) + len(b.input_ids) for a, b in encoded)
    # The least work the fast path needs: the replayed blocks once per m for each token of the
    # shared start of a pair (prompt and common completion start) and of each continuation, and the
    # head at every completion position once per m (shared positions once).
    cfg = model.config
    # A vector at a block's output: that block does not depend on m, the replay starts after it.
    start = layer + 1 if site_is_block_output(model, delta) else layer
    block_params = sum(p.numel() for p in unisteer.find_blocks(model)[1][start:].parameters())
    block_tokens = head_tokens = 0
    for a, b in encoded:
        k = shared_start((a, b))
        block_tokens += k + (len(a.input_ids) - k) + (len(b.input_ids) - k)
        head_tokens += (k - a.prompt_length) + (len(a.input_ids) - k) + (len(b.input_ids) - k)
    nonzero = sum(1 for m in ms if m != 0.0)
    flops = (
        2 * block_params * block_tokens * nonzero
        + 2 * cfg.hidden_size * cfg.vocab_size * head_tokens * nonzero
    )
    floor = matmul_gflops()
    print(f"naive {naive_t:.1f} s, fast {fast_t:.1f} s (best of {len(times['fast'])})")
    half = dtype != torch.float32
    bar = 1e-4
    if half:
        spread = naive_spread(model, tok, test[:16])
        bar = max(bar, 2 * spread)
        print(
            f"{args.dtype}: the naive path itself moves by {spread:.2e} (16 pairs per batch vs 4, "
            f"m = 0); agreement bar {bar:.2e}"
        )
    print(
        f"agreement: max |dPrefOdds| {d_pref:.2e}, max |dUtilOdds| {d_util:.2e} "
        f"({'OK' if max(d_pref, d_util) <= bar else 'MISMATCH'})"
    )
    worst = int(np.nanargmax(np.abs(results["naive"][1] - results["fast"][1])))
    print(
        f"largest UtilOdds difference at pair {worst // len(ms)}, m = {ms[worst % len(ms)]:g}, "
        f"where UtilOdds = {results['naive'][1][worst]:.2f} (relative difference "
        f"{d_util / max(abs(results['naive'][1][worst]), 1e-12):.1e})"
    )
    print(
        f"fast path: {seq_tokens * len(ms) / fast_t:.0f} sequence tokens/s (all m), "
        f"{flops / fast_t / 1e9:.1f} GFLOP/s of necessary matmul work = "
        f"{flops / fast_t / 1e9 / floor:.0%} of this machine's float32 matmul rate "
        f"({floor:.1f} GFLOP/s)"
    )
    suffix = ("_bf16" if half else "") + (f"_{args.arch}" if args.arch else "")
    if not half:
        f_naive, f_fast = float32_floor(model, tok, test[:16])
        print(
            f"float32 floor (16 pairs, m = 0, against a float64 forward pass): naive "
            f"{f_naive:.2e}, fast {f_fast:.2e} max |d NLL|"
        )
    print(f"RESULT sweep_agreement{suffix} {max(d_pref, d_util):.2e}")
    print(f"RESULT sweep_speedup{suffix} {naive_t / fast_t:.2f}")


if __name__ == "__main__":
    main()
