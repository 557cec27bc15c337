"""Issue 17 on a GPU: a random-weight Llama dispatched over ``cuda:0`` with CPU and disk offload
gives the numbers of the same model held whole on the GPU (sweep, training, generation); the
memory that sizes batches and training passes is the GPU's (``torch.cuda.mem_get_info``); a
70B-shaped plan is checked against the device's real memory without allocating it; and the
sweep's fast path is timed against the naive one on the GPU.

Needs a CUDA device (run by hand; the numbers go into docs/results.md). The model is random
(built from a config, a few GB in float32), the tokenizer and the word lists are the test
suite's, so nothing is downloaded::

    PYTHONPATH=src:tests python scripts/gpu_check.py [--layers 16 --hidden 2048]

Prints one line per check and ends with ``RESULT`` lines.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import unisteer
from unisteer.data import PolarityPair
from unisteer.data.tokens import encode_pairs
from unisteer.generation import generate
from unisteer.model.memory import available_bytes, block_devices, check_pairs_fit, free_bytes
from unisteer.scoring.sweep import sweep
from unisteer.training.batches import prepare, rows_per_pass

from tiny_tokenizers import CHATML, WORDS, word_tokenizer  # the test suite's helpers

COLS = ["loss_pos", "loss_neg", "pref_odds", "util_odds"]


def pairs(n: int, seed: int) -> list[PolarityPair]:
    """Longer random pairs than the unit tests' (queries of 20-40 words, answers of 20-60)."""
    rng = random.Random(seed)
    w = [x for x in WORDS if x.strip()]

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choices(w, k=rng.randint(lo, hi)))

    return [PolarityPair(text(20, 40), text(20, 60), text(20, 60), id=f"g{i}") for i in range(n)]


def randomized(delta: Any, seed: int, scale: float) -> Any:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in delta.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return delta


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``fn(*args, **kwargs)`` and its wall time (the device synchronised around it)."""
    sync()
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    sync()
    return out, time.perf_counter() - t


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--device", default="cuda", help="cpu: a smoke test of this script")
    args = ap.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check.py needs a CUDA device (or --device cpu for a smoke test)")
    main_device: Any = 0 if dev.type == "cuda" else "cpu"
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {name}, {gib(available_bytes(dev) or 0)} free")
    tok = word_tokenizer(chat_template=CHATML)
    L, H = args.layers, args.hidden
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=H, intermediate_size=int(2.75 * H),
        num_hidden_layers=L, num_attention_heads=H // 128, num_key_value_heads=max(1, H // 512),
        max_position_embeddings=4096, tie_word_embeddings=False,
    )  # fmt: skip
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "llama"
        torch.manual_seed(0)
        with torch.device(dev):
            LlamaForCausalLM(config).save_pretrained(path)
        tok.save_pretrained(path)
        plain, _ = unisteer.load_model(str(path), device=dev)
        n_params = sum(p.numel() for p in plain.parameters())
        on_gpu = L // 2
        plan: dict[str, Any] = {"model.embed_tokens": main_device, "model.rotary_emb": main_device}
        for i in range(L):
            where = main_device if i < on_gpu else ("disk" if i == L - 1 else "cpu")
            plan[f"model.layers.{i}"] = where
        plan.update({"model.norm": "cpu", "lm_head": "cpu"})
        dispatched, _ = unisteer.load_model(
            str(path), device_map=plan, offload_folder=Path(tmp) / "offload"
        )
        print(f"model: {n_params / 1e6:.0f}M parameters, {L} blocks; dispatched: blocks "
              f"0-{on_gpu - 1} on {dev}, {on_gpu}-{L - 2} offloaded to the CPU, "
              f"{L - 1} to disk")  # fmt: skip
        devices = block_devices(dispatched)
        dev_free = available_bytes(dev) or 0  # mem_get_info on a GPU
        said = free_bytes(dispatched) or 0
        print(f"blocks execute on {[str(d) for d in devices]}; free_bytes {gib(said)} "
              f"(the device: {gib(dev_free)})")  # fmt: skip
        assert [d.type for d in devices] == [dev.type], devices
        assert abs((free_bytes(dispatched) or 0) - dev_free) < 2**30

        data = pairs(args.pairs, seed=1)
        ms = [-4.0, -2.0, 0.0, 2.0, 4.0]
        for kind, layer in (("vector", on_gpu + 1), ("lora", on_gpu + 1), ("vector", 2)):
            delta = randomized(
                unisteer.new_delta(plain, kind, layer, rank=4), 3, 0.5 if kind == "vector" else 0.05
            )
            want, t_plain = timed(sweep, plain, tok, data, delta, ms, progress=False)
            got, t_disp = timed(sweep, dispatched, tok, data, delta, ms, progress=False)
            naive, t_naive = timed(
                sweep, plain, tok, data, delta, ms, progress=False, method="naive"
            )
            d_disp = float(np.abs(got.table[COLS].to_numpy() - want.table[COLS].to_numpy()).max())
            d_naive = float(
                np.abs(naive.table[COLS].to_numpy() - want.table[COLS].to_numpy()).max()
            )
            moved = float(np.abs(want.table["pref_odds"].to_numpy()).max())
            print(f"sweep {kind} at block {layer} ({want.meta['method']}): dispatched vs whole "
                  f"max |diff| {d_disp:.2e}, naive vs fast {d_naive:.2e} (largest |PrefOdds| "
                  f"{moved:.2f}); {t_plain:.2f} s whole, {t_disp:.2f} s dispatched, "
                  f"{t_naive:.2f} s naive")  # fmt: skip
            results[f"gpu_dispatched_sweep_diff_{kind}_{layer}"] = d_disp

        kw: dict[str, Any] = {"kind": "vector", "objective": "split", "layer": on_gpu + 1,
                              "epochs": 1, "batch_size": 4, "progress": False}  # fmt: skip
        a, t_a = timed(unisteer.train, plain, tok, data, **kw)
        b, t_b = timed(unisteer.train, dispatched, tok, data, **kw)
        d_train = max(
            float((x.detach().cpu() - y.detach().cpu()).abs().max())
            for x, y in zip(a.parameters(), b.parameters(), strict=True)
        )
        norm = float(next(iter(a.parameters())).detach().norm())
        print(f"train vector/split: dispatched vs whole max |diff| {d_train:.2e} "
              f"(norm {norm:.3f}); "
              f"{t_a:.1f} s whole, {t_b:.1f} s dispatched")  # fmt: skip
        results["gpu_dispatched_train_diff"] = d_train
        batches, runner = prepare(plain, tok, data, a, batch_size=4, seed=0)
        per_pass = rows_per_pass(plain, batches, runner)
        print(f"rows per training pass from the device's free memory: {per_pass}")

        prompts = [p.query for p in data[:4]]
        steered = randomized(unisteer.new_delta(plain, "vector", on_gpu + 1), 5, 1.0)
        rows_m = [0.0, 0.0, 0.0, 0.0, 8.0, 8.0, 8.0, 8.0]
        g1 = generate(plain, tok, prompts * 2, delta=steered, m=rows_m, max_new_tokens=24)
        g2 = generate(dispatched, tok, prompts * 2, delta=steered, m=rows_m, max_new_tokens=24)
        same = sum(x == y for x, y in zip(g1, g2, strict=True))
        changed = sum(x != y for x, y in zip(g1[:4], g1[4:], strict=True))
        print(
            f"greedy generation: {same}/8 identical, dispatched vs whole; "
            f"steering changed {changed}/4"
        )
        results["gpu_dispatched_generation_same"] = same / 8

        # the sweep's fast path against the naive one, 21 points, whole model, float32 and bf16
        grid = [float(x) for x in np.linspace(-5, 5, 21)]
        for dtype in (torch.float32, torch.bfloat16):
            model = plain if dtype == torch.float32 else plain.to(torch.bfloat16)
            delta = randomized(unisteer.new_delta(model, "vector", on_gpu + 1), 3, 0.5)
            sweep(model, tok, data, delta, grid, progress=False)  # warm-up
            _, t_fast = timed(sweep, model, tok, data, delta, grid, progress=False)
            _, t_slow = timed(sweep, model, tok, data, delta, grid, progress=False, method="naive")
            name = str(dtype).removeprefix("torch.")
            print(f"sweep 21 points x {len(data)} pairs ({name}): fast {t_fast:.2f} s, naive "
                  f"{t_slow:.2f} s, {t_slow / t_fast:.2f}x")  # fmt: skip
            results[f"gpu_sweep_speedup_{name}"] = t_slow / t_fast
        plain = dispatched = model = None
        if dev.type == "cuda":
            torch.cuda.empty_cache()

    # a 70B-shaped plan against this GPU's real memory, nothing allocated
    from accelerate import infer_auto_device_map, init_empty_weights

    big = LlamaConfig(
        vocab_size=128256, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
        num_attention_heads=64, num_key_value_heads=8, tie_word_embeddings=False,
    )  # fmt: skip
    t = time.perf_counter()
    with init_empty_weights():
        empty = LlamaForCausalLM(big)
    budget = {main_device: int((available_bytes(dev) or 0) * 0.9), "cpu": 200 * 2**30}
    if dev.type == "cpu":
        budget = {"cpu": 200 * 2**30}
    big_plan = infer_auto_device_map(
        empty, max_memory=budget, no_split_module_classes=["LlamaDecoderLayer"],
        dtype=torch.bfloat16,
    )  # fmt: skip
    n_gpu = sum(
        1 for k, v in big_plan.items() if k.startswith("model.layers.") and v == main_device
    )
    encoded = encode_pairs(tok, data, max_tokens=4096)
    check_pairs_fit(empty, data, encoded, "scoring", device_map=big_plan)
    print(f"70B plan in bf16: {n_gpu} of 80 blocks on {dev}, the rest on the CPU; blocks execute "
          f"on {[str(d) for d in block_devices(empty, big_plan)]}; pairs accepted "
          f"({time.perf_counter() - t:.1f} s, nothing allocated)")  # fmt: skip
    results["gpu_70b_blocks_on_gpu"] = n_gpu
    for k, v in results.items():
        print(f"RESULT {k} {v:.6g}")


if __name__ == "__main__":
    main()
