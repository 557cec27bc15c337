"""The command line: a thin layer over the public API."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from unisteer._version import __version__
from unisteer.errors import UnisteerError


def _demo(args: argparse.Namespace) -> int:
    from unisteer.demo import format_side_by_side, run_demo

    result = run_demo(
        args.model, prompt=args.prompt, strength=args.strength, max_new_tokens=args.max_new_tokens
    )
    print(format_side_by_side(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from unisteer.models import DEFAULT_MODEL

    parser = argparse.ArgumentParser(
        prog="unisteer", description="Steer language models with one affine delta."
    )
    parser.add_argument("--version", action="version", version=f"unisteer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="load the default model and print an unsteered and a steered completion"
    )
    demo.add_argument("--model", default=DEFAULT_MODEL, help="built-in name, directory or HF id")
    demo.add_argument("--prompt", default="Tell me about your plans for the weekend.")
    demo.add_argument(
        "--strength",
        type=float,
        default=0.6,
        help="multiplier as a fraction of the median residual norm (default 0.6)",
    )
    demo.add_argument("--max-new-tokens", type=int, default=48)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UnisteerError as e:
        print(f"unisteer: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("unisteer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
