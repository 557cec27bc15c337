"""``unisteer export gguf|peft|merged``: a saved delta or steering set at one m, in the format
llama.cpp, PEFT/vLLM or plain Hugging Face loading reads (:mod:`unisteer.interop`)."""

from __future__ import annotations

import argparse
import math
from typing import Any


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def register(sub: Any) -> None:
    from unisteer.model import DEFAULT_MODEL

    p = sub.add_parser("export", help="write a delta for llama.cpp, PEFT/vLLM or as a checkpoint")
    formats = p.add_subparsers(dest="format", required=True)
    helps = {
        "gguf": "a llama.cpp / repeng control vector (vectors at block outputs, layer >= 1)",
        "peft": "a PEFT LoRA adapter (LoRA exact; a local weight update by truncated SVD)",
        "merged": "a full Hugging Face checkpoint with W + m·ΔW (and b + m·Δb)",
    }
    for name, text in helps.items():
        q = formats.add_parser(name, help=text)
        q.add_argument("delta", help="a folder written by save_delta or save_steering_set")
        q.add_argument("--m", type=_finite, required=True, help="the multiplier to fold in")
        q.add_argument("--out", required=True, help="the file (gguf) or folder to write")
        q.add_argument("--model", default=DEFAULT_MODEL, help="the model the delta is for")
        if name == "gguf":
            q.add_argument(
                "--any-family",
                action="store_true",
                help="export for a model family unisteer does not know llama.cpp to steer",
            )
        if name == "peft":
            q.add_argument("--rank", type=int, help="SVD rank for local weight updates")
            q.add_argument(
                "--drop-bias", action="store_true", help="export a local update's ΔW without Δb"
            )
            q.add_argument("--base-model", help="base_model_name_or_path (default: the model's)")
        q.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unisteer.core.io import load_steerable
    from unisteer.files import check_output_dir
    from unisteer.model.load import load_model

    if args.format != "gguf":
        check_output_dir(args.out, "--out folder")
    model, tokenizer = load_model(args.model)
    steerable = load_steerable(args.delta, model, tokenizer=tokenizer)
    if args.format == "gguf":
        from unisteer.interop.gguf import export_control_vector

        path = export_control_vector(model, steerable, args.m, args.out, any_family=args.any_family)
        print(f"wrote {path}: run llama.cpp with --control-vector {path}")
    elif args.format == "peft":
        from unisteer.interop.peft import export_peft

        done = export_peft(
            model,
            steerable,
            args.m,
            args.out,
            rank=args.rank,
            drop_bias=args.drop_bias,
            base_model_name_or_path=args.base_model,
        )
        for site, rank in done.ranks.items():
            error = done.relative_errors.get(site)
            note = "exact" if error is None else f"relative error of ΔW {error:.3g} (SVD)"
            print(f"{site}: rank {rank}, {note}")
        print(
            f"wrote {done.directory}: load it with PeftModel.from_pretrained or vLLM --lora-modules"
        )
    else:
        from unisteer.interop.merged import export_merged

        path = export_merged(model, steerable, args.m, args.out, tokenizer=tokenizer)
        print(f"wrote {path}: load it with AutoModelForCausalLM.from_pretrained({str(path)!r})")
    return 0
