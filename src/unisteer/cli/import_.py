"""``unisteer import gguf|peft|steering-vectors``: a control vector, a PEFT LoRA adapter or a
steering-vectors file as a unisteer steering set (:mod:`unisteer.interop`)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    from unisteer.model import DEFAULT_MODEL

    p = sub.add_parser("import", help="read a control vector, PEFT adapter or steering vector")
    formats = p.add_subparsers(dest="format", required=True)
    helps = {
        "gguf": "a llama.cpp / repeng control vector (.gguf)",
        "peft": "a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors)",
        "steering-vectors": "a safetensors file of a SteeringVector's layer_activations",
    }
    for name, text in helps.items():
        q = formats.add_parser(name, help=text)
        q.add_argument("source", help="the file or folder to read")
        q.add_argument("--out", required=True, help="folder for the steering set")
        q.add_argument("--model", default=DEFAULT_MODEL, help="the model it is for")
        q.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unisteer.core.io import save_steering_set
    from unisteer.files import check_output_dir
    from unisteer.model.load import load_model

    out = check_output_dir(args.out, "--out folder")
    model, tokenizer = load_model(args.model)
    if args.format == "gguf":
        from unisteer.interop.gguf import import_control_vector

        steering_set = import_control_vector(args.source, model, tokenizer=tokenizer)
    elif args.format == "peft":
        from unisteer.interop.peft import import_peft

        steering_set = import_peft(args.source, model, tokenizer=tokenizer)
    else:
        from unisteer.interop.steering_vectors import import_steering_vector

        steering_set = import_steering_vector(args.source, model, tokenizer=tokenizer)
    save_steering_set(steering_set, out)
    print(f"{len(steering_set)} deltas ({', '.join(steering_set.kinds)}) at {steering_set.sites}")
    print(f"wrote {out}: sweep it with unisteer sweep --delta {out}")
    return 0
