"""Check a unisteer control-vector export in llama.cpp itself (issue 16; run by
scripts/check_interop.sh, not in CI).

1. Converts the default model's float32 cache (the Hugging Face folder unisteer loads) to an
   F32 GGUF with llama.cpp's own ``convert_hf_to_gguf.py``, so both sides run the same weights.
2. Trains a DiffMean vector at the output of the middle block (the paper's default layer) on
   the default dataset's ``optimism`` pairs and exports it with
   :func:`unisteer.interop.gguf.export_control_vector` at ``m`` (and a zero vector at the same
   layer).
3. ``llama-perplexity`` (which reads the files with llama.cpp's control-vector loader):
   perplexity of our own text without a vector, with the zero vector and with the DiffMean
   vector (``--control-vector-scaled FILE:1``), next to the same perplexity computed with our
   Hugging Face hook on the same token ids and the same chunking.
4. llama.cpp's logits through the llama-cpp-python binding (``llama_set_adapter_cvec`` with
   the directions read from our file by ``gguf.GGUFReader``, laid out as llama.cpp's loader
   lays them out) against our hook: the correlation of the logit *changes* and their largest
   difference.

Prints a Markdown block for docs/results.md and ends with ``RESULT`` lines.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


def run(cmd: list[str], **kw: object) -> str:
    print("$", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}")
    return str(done.stdout + done.stderr)


def convert(llama_src: Path, hf_dir: Path, out: Path) -> None:
    if out.is_file():
        return
    convert_py = llama_src / "vendor/llama.cpp/convert_hf_to_gguf.py"
    # the converter's own gguf-py, and sentencepiece (check_interop.sh installs it in pydeps)
    paths = [llama_src / "vendor/llama.cpp/gguf-py", llama_src.parent / "pydeps"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(map(str, paths)))
    tmp = out.with_suffix(".part")
    run(
        [sys.executable, str(convert_py), str(hf_dir), "--outtype", "f32", "--outfile", str(tmp)],
        env=env,
    )
    os.replace(tmp, out)


def perplexity_llamacpp(
    build: Path, model: Path, text: Path, ctx: int, chunks: int, vector: Path | None
) -> float:
    cmd = [
        str(build / "bin/llama-perplexity"),
        "-m",
        str(model),
        "-f",
        str(text),
        "-c",
        str(ctx),
        "--chunks",
        str(chunks),
        "-t",
        str(os.cpu_count() or 2),
        "-b",
        str(ctx),
    ]
    if vector is not None:
        cmd += ["--control-vector-scaled", f"{vector}:1.0"]
    out = run(cmd, env=dict(os.environ, LD_LIBRARY_PATH=str(build / "bin")))
    if vector is not None and "failed to load control vector" in out.lower():
        raise SystemExit(f"llama.cpp skipped {vector}:\n{out[-2000:]}")
    found = re.search(r"Final estimate: PPL = ([0-9.]+)", out)
    if not found:
        raise SystemExit(f"no perplexity in llama-perplexity's output:\n{out[-2000:]}")
    return float(found.group(1))


def perplexity_hf(
    model: torch.nn.Module, tokens: list[int], ctx: int, chunks: int, add_bos: bool, bos: int
) -> float:
    """llama-perplexity's estimate: per chunk of ``ctx`` tokens (the first replaced by BOS when
    the vocabulary adds one), the mean NLL of the second half's next tokens."""
    nll, count = 0.0, 0
    first = ctx // 2
    with torch.no_grad():
        for c in range(chunks):
            ids = list(tokens[c * ctx : (c + 1) * ctx])
            if add_bos:
                ids[0] = bos
            x = torch.tensor([ids])
            logp = torch.log_softmax(model(input_ids=x).logits[0].double(), dim=-1)
            target = x[0, first + 1 :]
            nll -= float(logp[first : ctx - 1].gather(1, target[:, None]).sum())
            count += len(target)
    return math.exp(nll / count)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-src", type=Path, required=True)
    ap.add_argument("--build", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--m", type=float, default=4.0)
    ap.add_argument("--concept", default="optimism")
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--chunks", type=int, default=24)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 2)

    import unisteer
    from unisteer.data.default import default_dataset, default_split
    from unisteer.interop.gguf import export_control_vector
    from unisteer.model.load import cache_root

    t0 = time.perf_counter()
    model, tok = unisteer.load_model()
    hf_dir = cache_root() / "models" / unisteer.DEFAULT_MODEL
    f32 = args.work / "default-f32.gguf"
    convert(args.llama_src, hf_dir, f32)

    layer = unisteer.middle_layer(model)
    train_pairs, _ = default_split(args.concept)
    delta = unisteer.train(
        model, tok, train_pairs, kind="vector", objective="diffmean", layer=layer, progress=False
    )
    vec = export_control_vector(model, delta, args.m, args.work / "diffmean.gguf")
    zero = export_control_vector(model, delta, 0.0, args.work / "zero.gguf")

    # Our own text: the default dataset's completions, every concept.
    text = args.work / "text.txt"
    text.write_text("\n\n".join(f"{p.positive}\n{p.negative}" for p in default_dataset()))

    # llama.cpp through the binding (for token ids and logits).
    os.environ["LLAMA_CPP_LIB_PATH"] = str(args.build / "bin")
    sys.path[:0] = [str(args.llama_src), str(args.llama_src.parent / "pydeps")]  # + diskcache
    import gguf
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=str(f32),
        n_ctx=args.ctx,
        n_batch=args.ctx,
        logits_all=True,
        verbose=False,
        n_threads=os.cpu_count() or 2,
    )
    tokens = llm.tokenize(text.read_bytes(), add_bos=True, special=False)
    add_bos = llm.tokenize(b"a", add_bos=True) != llm.tokenize(b"a", add_bos=False)
    bos = llm.token_bos()
    assert len(tokens) >= args.ctx * args.chunks, "text too short"

    steered = f"DiffMean m={args.m:g}"
    ppl = {
        f"llama.cpp, {name}": perplexity_llamacpp(args.build, f32, text, args.ctx, args.chunks, cv)
        for name, cv in (("no vector", None), ("zero vector", zero), (steered, vec))
    }
    ppl["unisteer hook, m=0"] = perplexity_hf(model, tokens, args.ctx, args.chunks, add_bos, bos)
    with unisteer.steer(model, delta, m=args.m):
        ppl[f"unisteer hook, {steered}"] = perplexity_hf(
            model, tokens, args.ctx, args.chunks, add_bos, bos
        )

    # Logit changes on a few prompts, llama.cpp (cvec from our file) vs our hook.
    reader = gguf.GGUFReader(str(vec))
    n_embd, n_layer = llm.n_embd(), int(llama_cpp.llama_model_n_layer(llm._model.model))
    buf = np.zeros((n_layer, n_embd), dtype=np.float32)  # row il-1 holds direction.il
    for t in reader.tensors:
        il = int(t.name.split(".")[1])
        buf[il - 1] = np.asarray(t.data, dtype=np.float32)
    prompts = [p.query if isinstance(p.query, str) else str(p.query) for p in train_pairs[:6]]
    d_ours, d_theirs, base_gap = [], [], 0.0

    def cpp_logits(ids: list[int]) -> np.ndarray:
        llm.reset()
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float64)

    for prompt in prompts:
        ids = llm.tokenize(prompt.encode(), add_bos=True, special=False)
        llama_cpp.llama_set_adapter_cvec(llm._ctx.ctx, None, 0, n_embd, 0, 0)
        cpp_base = cpp_logits(ids)
        ptr = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        rc = llama_cpp.llama_set_adapter_cvec(llm._ctx.ctx, ptr, buf.size, n_embd, 1, n_layer - 1)
        assert rc == 0, f"llama_set_adapter_cvec returned {rc}"
        cpp_steered = cpp_logits(ids)
        llama_cpp.llama_set_adapter_cvec(llm._ctx.ctx, None, 0, n_embd, 0, 0)
        x = torch.tensor([ids])
        with torch.no_grad():
            hf_base = model(input_ids=x).logits[0].double().numpy()
            with unisteer.steer(model, delta, m=args.m):
                hf_steered = model(input_ids=x).logits[0].double().numpy()
        base_gap = max(base_gap, float(np.abs(hf_base - cpp_base).max()))
        d_ours.append((hf_steered - hf_base).ravel())
        d_theirs.append((cpp_steered - cpp_base).ravel())
    ours, theirs = np.concatenate(d_ours), np.concatenate(d_theirs)
    corr = float(np.corrcoef(ours, theirs)[0, 1])
    gap = float(np.abs(ours - theirs).max())
    scale = float(np.abs(ours).max())

    report = {
        "layer": layer,
        "m": args.m,
        "ctx": args.ctx,
        "chunks": args.chunks,
        "perplexity": ppl,
        "logit_change_correlation": corr,
        "logit_change_max_abs_diff": gap,
        "logit_change_max_abs": scale,
        "base_logit_max_abs_diff": base_gap,
        "prompts": len(prompts),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (args.work / "llamacpp.json").write_text(json.dumps(report, indent=2))
    print("\n| run | perplexity |\n|---|---|")
    for k, v in ppl.items():
        print(f"| {k} | {v:.4f} |")
    print(
        f"\nlogit changes over {len(prompts)} prompts ({ours.size} logits): correlation "
        f"{corr:.6f}, largest |ours − llama.cpp| {gap:.2e} (largest change {scale:.2f}); "
        f"base logits agree within {base_gap:.2e}"
    )
    zero_same = ppl["llama.cpp, zero vector"] == ppl["llama.cpp, no vector"]
    print(f"RESULT llamacpp_zero_vector_identical {int(zero_same)}")
    print(f"RESULT llamacpp_logit_change_correlation {corr:.6f}")
    cpp_ratio = ppl[f"llama.cpp, {steered}"] / ppl["llama.cpp, no vector"]
    hf_ratio = ppl[f"unisteer hook, {steered}"] / ppl["unisteer hook, m=0"]
    print(f"RESULT llamacpp_ppl_ratio {cpp_ratio:.4f}")
    print(f"RESULT hf_ppl_ratio {hf_ratio:.4f}")


if __name__ == "__main__":
    main()
