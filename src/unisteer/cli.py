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


def _sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from unisteer.data.sources import load_pairs
    from unisteer.grid import parse_grid
    from unisteer.models import load_model
    from unisteer.persistence import load_delta
    from unisteer.scoring import sweep

    model, tokenizer = load_model(args.model)
    delta = load_delta(args.delta, model, tokenizer=tokenizer)
    if args.ms is not None:
        try:
            ms = parse_grid(args.ms)
        except ValueError as e:
            raise SystemExit(f"unisteer: error: argument --ms: {e}") from None
    elif isinstance(delta.meta.get("grid"), list):
        ms = [float(x) for x in delta.meta["grid"]]
    else:
        raise SystemExit(
            f"unisteer: error: {args.delta} records no multiplier grid; give --ms LO:HI:N"
        )
    pairs = load_pairs(args.data)
    if args.split != "all":
        train, test = pairs.fixed_split()
        pairs = train if args.split == "train" else test
    result = sweep(
        model,
        tokenizer,
        pairs,
        delta,
        ms,
        reduction=args.reduction,
        include_suffix=args.include_suffix,
        positions=args.positions,
        memory_budget=int(args.memory_mb * (1 << 20)),
    )
    out = result.save(Path(args.out))
    means = result.means()
    print(
        means[
            [
                "m",
                "n",
                "pref_odds",
                "pref_odds_sem",
                "util_odds",
                "util_odds_sem",
                "n_out_of_domain",
            ]
        ].to_string(index=False, float_format=lambda x: f"{x:.3f}")
    )
    print(f"wrote {out / 'sweep.parquet'}, {out / 'means.parquet'} and {out / 'sweep.json'}")
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

    sw = sub.add_parser("sweep", help="PrefOdds and UtilOdds of a saved delta over a grid of m")
    sw.add_argument("--model", default=DEFAULT_MODEL)
    sw.add_argument("--delta", required=True, help="directory written by Delta.save")
    sw.add_argument("--data", required=True, help="a data file or default[:CONCEPT]")
    sw.add_argument(
        "--split",
        choices=["all", "train", "test"],
        default="all",
        help="use the split recorded in the data (default: all pairs)",
    )
    sw.add_argument("--ms", help="LO:HI:N or a comma list (default: the delta's own grid)")
    sw.add_argument("--out", required=True, help="output directory")
    sw.add_argument("--reduction", choices=["sum", "mean"], default="sum")
    sw.add_argument(
        "--include-suffix",
        action="store_true",
        help="count the end-of-turn tokens as part of each completion",
    )
    sw.add_argument("--positions", choices=["all", "prompt", "completion"], default="all")
    sw.add_argument(
        "--memory-mb",
        type=float,
        default=1024.0,
        help="activation memory per call (sets the batch shapes)",
    )
    sw.set_defaults(func=_sweep)
    return parser


def _join_negative_values(argv: list[str]) -> list[str]:
    """Let ``--ms -4:4:21`` through: argparse would read ``-4:4:21`` as an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--ms" and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"--ms={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = build_parser().parse_args(
        _join_negative_values(list(sys.argv[1:] if argv is None else argv))
    )
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
