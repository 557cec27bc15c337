"""``unisteer demo``: an unsteered and a steered completion side by side."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    from unisteer.model import DEFAULT_MODEL

    p = sub.add_parser(
        "demo", help="load the default model and print an unsteered and a steered completion"
    )
    p.add_argument("--model", default=DEFAULT_MODEL, help="built-in name, directory or HF id")
    p.add_argument("--prompt", default="Tell me about your plans for the weekend.")
    p.add_argument(
        "--strength",
        type=float,
        default=0.6,
        help="the push m·‖v‖ as a fraction of the median residual norm (default 0.6)",
    )
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unisteer.experiment.demo import format_side_by_side, run_demo

    result = run_demo(
        args.model, prompt=args.prompt, strength=args.strength, max_new_tokens=args.max_new_tokens
    )
    print(format_side_by_side(result))
    return 0
