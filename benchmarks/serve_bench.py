"""The server's batching across requests: N concurrent chat requests (mixed steering: none, a
DiffMean vector at two strengths, a vector at the completion only) against the same server
decoding them together (``--max-batch N``) and one at a time (``--max-batch 1``), in one run,
on loopback with the official ``openai`` client. Greedy outputs must be the same both ways.

    python benchmarks/serve_bench.py [--requests 8] [--tokens 48] [--rounds 2]

Ends with ``RESULT serve_batching_speedup <time one at a time / time batched>``.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import torch

import unisteer
from unisteer.data import default_split
from unisteer.serve import App, Server, Settings
from unisteer.serve.registry import Loaded

PROMPTS = [
    "How should I prepare for a job interview?",
    "Give me some tips for a long train journey.",
    "What is a good way to learn to cook?",
    "How do I keep a houseplant alive?",
    "Describe a calm morning routine.",
    "How can I get better at chess?",
    "What should I pack for a rainy weekend trip?",
    "How do I start running regularly?",
]


def requests(n: int, tokens: int) -> list[dict[str, Any]]:
    steerings: list[list[dict[str, Any]]] = [
        [],
        [{"delta": "archaic", "m": 4.0}],
        [{"delta": "archaic", "m": 8.0, "positions": "completion"}],
        [{"delta": "archaic", "m": -4.0}],
    ]
    return [
        {
            "model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            "max_tokens": tokens,
            "extra_body": {"steering": steerings[i % len(steerings)]},
        }
        for i in range(n)
    ]


def run(server: Server, reqs: list[dict[str, Any]]) -> tuple[float, list[str]]:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    t = time.perf_counter()
    with ThreadPoolExecutor(len(reqs)) as pool:
        done = list(pool.map(lambda r: client.chat.completions.create(**r), reqs))
    return time.perf_counter() - t, [d.choices[0].message.content or "" for d in done]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=2, help="2: ABBA (drift cancels), 1: AB")
    args = ap.parse_args()
    model, tok = unisteer.load_model()
    layer = len(unisteer.find_blocks(model)[1]) // 2
    train, _ = default_split("archaic")
    delta = unisteer.train(model, tok, train[:16], kind="vector", objective="diffmean",
                           layer=layer, progress=False)  # fmt: skip
    deltas = {"archaic": Loaded("archaic", delta, "archaic", None, (), None)}  # type: ignore[arg-type]
    reqs = requests(args.requests, args.tokens)
    print(f"{args.requests} concurrent requests of {args.tokens} tokens, default model, "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip
    times: dict[str, float] = {}
    texts: dict[str, list[str]] = {}
    for way in ["batched", "one", "one", "batched"][: 2 * args.rounds]:
        batch = args.requests if way == "batched" else 1
        app = App(model, tok, deltas, Settings("smollm2-135m-instruct"), max_batch=batch,
                  max_waiting=args.requests)  # fmt: skip
        with Server(app, port=0) as server:
            run(server, reqs[:1])  # warm-up
            elapsed, out = run(server, reqs)
        times[way] = min(times.get(way, float("inf")), elapsed)
        texts.setdefault(way, out)
        tokens_out = args.requests * args.tokens
        print(f"  {way:8s} {elapsed:6.1f} s  ({tokens_out / elapsed:5.1f} tokens/s at most, "
              f"{args.requests / elapsed:.2f} requests/s)")  # fmt: skip
    same = sum(a == b for a, b in zip(texts["batched"], texts["one"], strict=True))
    print(f"greedy texts identical batched and one at a time: {same}/{args.requests}")
    print(f"best of {args.rounds}: batched {times['batched']:.1f} s, one at a time "
          f"{times['one']:.1f} s")  # fmt: skip
    print(f"RESULT serve_batching_speedup {times['one'] / times['batched']:.2f}")


if __name__ == "__main__":
    main()
