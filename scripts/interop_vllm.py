"""Check a unisteer PEFT export in vLLM's OpenAI server (issue 16; run by
scripts/check_interop.sh, not in CI).

Exports a steering set of the default model (a LoRA at two blocks, exact, and a local weight
update at a third, by truncated SVD) with :func:`unisteer.interop.peft.export_peft`, starts
vLLM's OpenAI server from its own venv on 127.0.0.1 with the adapter as a LoRA module
(``--enable-lora``), asks it for the prompt log-probabilities of a few prompts (sent as token
ids, so both sides see the same tokens), and compares them with our hook's on the same model
(float32 on both sides): with the adapter as written (read back by ``import_peft``) and with
the steering set before export (its local ΔW has rank 6, so the rank-8 SVD loses nothing but
rounding). The base model is compared too. Prints the numbers for docs/results.md as JSON and
ends with ``RESULT`` lines; exits 1 when a steered gap exceeds 1e-4.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(url: str, body: dict[str, object]) -> dict[str, object]:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def wait_ready(url: str, server: subprocess.Popen[bytes], log: Path, limit: float) -> None:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if server.poll() is not None:
            raise SystemExit(f"vLLM exited ({server.returncode}):\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(2)
    raise SystemExit(f"vLLM did not start in {limit:.0f} s:\n{log.read_text()[-4000:]}")


def served_logprobs(base_url: str, model: str, ids: list[int]) -> list[float]:
    """vLLM's log-probability of each prompt token after the first (``prompt_logprobs``)."""
    out = post(
        f"{base_url}/v1/completions",
        {"model": model, "prompt": ids, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0},
    )
    rows = out["choices"][0]["prompt_logprobs"]  # type: ignore[index]
    got = []
    for token, row in zip(ids[1:], rows[1:], strict=True):
        got.append(float(row[str(token)]["logprob"]))
    return got


def our_logprobs(model: torch.nn.Module, ids: list[int]) -> list[float]:
    x = torch.tensor([ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=x).logits[0].double(), dim=-1)
    return [float(v) for v in logp[:-1].gather(1, x[0, 1:, None])[:, 0]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--venv", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--m", type=float, default=1.0)
    ap.add_argument("--rank", type=int, default=8, help="SVD rank of the local weight update")
    ap.add_argument("--start-limit", type=float, default=900.0)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 2)

    import unisteer
    from unisteer.data.default import default_split
    from unisteer.interop.peft import export_peft, import_peft
    from unisteer.model.load import cache_root

    model, tok = unisteer.load_model()
    hf_dir = cache_root() / "models" / unisteer.DEFAULT_MODEL
    gen = torch.Generator().manual_seed(0)
    members = []
    for layer, kind in ((10, "lora"), (15, "lora"), (20, "local_weight")):
        d = unisteer.new_delta(model, kind, layer, rank=4)  # type: ignore[arg-type]
        with torch.no_grad():
            for p in d.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * (0.05 if kind == "lora" else 0.002))
            if kind == "local_weight":
                d.bias_.zero_()  # vLLM refuses lora_bias
                # a ΔW of rank 6, so the rank-8 SVD export is exact up to rounding and the
                # served adapter can be held to the unexported set too
                w = d.weight_
                u = torch.randn(w.shape[0], 6, generator=gen)
                v = torch.randn(6, w.shape[1], generator=gen)
                w.copy_(u @ v * 0.0005)
        members.append(d)
    steering = unisteer.SteeringSet(members)
    adapter = args.work / "peft"
    if adapter.exists():
        import shutil

        shutil.rmtree(adapter)
    done = export_peft(model, steering, args.m, adapter, rank=args.rank)
    train, _ = default_split()
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": p.query}], add_generation_prompt=True, tokenize=False
        )
        + p.positive
        for p in train[:: max(1, len(train) // 6)][:6]
        if isinstance(p.query, str)
    ]
    token_ids = [list(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    ours_base = [our_logprobs(model, ids) for ids in token_ids]
    with unisteer.steer(model, steering, m=args.m):
        ours_steered = [our_logprobs(model, ids) for ids in token_ids]
    # the adapter exactly as written (the SVD's truncation included), read back by our importer
    exported = import_peft(adapter, model, tokenizer=tok)
    with unisteer.steer(model, exported, m=1.0):
        ours_exported = [our_logprobs(model, ids) for ids in token_ids]

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = args.work / "vllm.log"
    cmd = [
        str(args.venv / "bin/python"), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(hf_dir), "--served-model-name", "base", "--host", "127.0.0.1",
        "--port", str(port), "--dtype", "float32", "--max-model-len", "512",
        "--enforce-eager", "--enable-lora",
        "--max-lora-rank", str(max(8, max(done.ranks.values()))),
        "--lora-modules", f"steer={adapter}",
    ]  # fmt: skip
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_TARGET_DEVICE="cpu")
    env.pop("PYTHONPATH", None)
    t0 = time.monotonic()
    with log.open("wb") as f:
        server = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    try:
        wait_ready(f"{base_url}/health", server, log, args.start_limit)
        started = time.monotonic() - t0
        theirs_base = [served_logprobs(base_url, "base", ids) for ids in token_ids]
        theirs_steered = [served_logprobs(base_url, "steer", ids) for ids in token_ids]
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()

    def gap(a: list[list[float]], b: list[list[float]]) -> float:
        return max(
            abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True)
        )

    base_gap = gap(ours_base, theirs_base)
    steer_gap = gap(ours_exported, theirs_steered)
    set_gap = gap(ours_steered, theirs_steered)
    moved = gap(ours_base, ours_steered)
    n = sum(len(r) for r in ours_base)
    report = {
        "m": args.m, "ranks": done.ranks, "svd_relative_errors": done.relative_errors,
        "tokens": n, "prompts": len(prompts), "server_start_s": round(started, 1),
        "base_max_abs_diff": base_gap, "steered_max_abs_diff": steer_gap,
        "steered_vs_unexported_set_max_abs_diff": set_gap,
        "steering_moved_logprobs_by": moved,
    }  # fmt: skip
    (args.work / "vllm.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(
        f"\nvLLM {args.venv.name}: over {n} prompt tokens, base log-probs within {base_gap:.2e} of "
        f"ours, the served PEFT export within {steer_gap:.2e} of our hook with the same adapter "
        f"and within {set_gap:.2e} of the steering set before export (steering moved them by up "
        f"to {moved:.3f})"
    )
    print(f"RESULT vllm_steered_logprob_max_abs_diff {steer_gap:.3e}")
    print(f"RESULT vllm_base_logprob_max_abs_diff {base_gap:.3e}")
    sys.exit(0 if max(steer_gap, set_gap) <= 1e-4 else 1)


if __name__ == "__main__":
    main()
