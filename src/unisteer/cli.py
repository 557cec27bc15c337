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


def _data_inspect(args: argparse.Namespace) -> int:
    from unisteer.data.sources import load_pairs
    from unisteer.data.summary import format_summary, summarize

    fields = {}
    for item in args.field or []:
        ours, sep, theirs = item.partition("=")
        if not sep or not ours or not theirs:
            raise SystemExit(f"unisteer: error: --field expects OURS=THEIRS, got {item!r}")
        fields[ours] = theirs
    model = tokenizer = None
    if args.model:
        from unisteer.models import load_model

        model, tokenizer = load_model(args.model)
    pairs = load_pairs(
        args.path,
        format=args.format,
        fields=fields or None,
        invert=args.invert,
        strict=False,
        model=model,
        tokenizer=tokenizer,
    )
    print(format_summary(summarize(pairs, tokenizer, examples=args.examples)))
    return 1 if pairs.problems and args.fail_on_problems else 0


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

    data = sub.add_parser("data", help="work with polarity-paired data")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    inspect = data_sub.add_parser(
        "inspect", help="counts, lengths, examples and problems of a data source"
    )
    inspect.add_argument("path", help="a file, a saved HF dataset directory, or default[:CONCEPT]")
    inspect.add_argument(
        "--format",
        default="auto",
        choices=["auto", "pairs", "persona", "advanced-ai-risk", "caa-ab", "axbench", "hf"],
    )
    inspect.add_argument(
        "--field",
        action="append",
        metavar="OURS=THEIRS",
        help="map a pair field (query, positive, negative, id) to a column; repeatable",
    )
    polarity = inspect.add_mutually_exclusive_group()
    polarity.add_argument(
        "--invert",
        action="store_true",
        default=None,
        help="the file's matching answer lacks the behaviour: swap",
    )
    polarity.add_argument("--no-invert", dest="invert", action="store_false")
    inspect.add_argument("--model", help="count tokens with this model's tokenizer")
    inspect.add_argument("--examples", type=int, default=3)
    inspect.add_argument(
        "--fail-on-problems",
        action="store_true",
        help="exit with status 1 when rows had to be skipped",
    )
    inspect.set_defaults(func=_data_inspect)
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
