"""``unisteer data inspect`` and the data-source options other subcommands share."""

from __future__ import annotations

import argparse
from typing import Any

from unisteer.data.pairs import PairSet
from unisteer.errors import UsageError


def add_source_options(p: argparse.ArgumentParser) -> None:
    """``--format``, ``--field`` and ``--invert/--no-invert`` for reading a data source."""
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto", "pairs", "persona", "advanced-ai-risk", "caa-ab", "axbench", "hf"],
    )
    p.add_argument(
        "--field",
        action="append",
        metavar="OURS=THEIRS",
        help="map a pair field (query, positive, negative, id) to a column; repeatable",
    )
    polarity = p.add_mutually_exclusive_group()
    polarity.add_argument(
        "--invert",
        action="store_true",
        default=None,
        help="the file's matching answer lacks the behaviour: swap",
    )
    polarity.add_argument("--no-invert", dest="invert", action="store_false")


def add_length_options(p: argparse.ArgumentParser) -> None:
    """``--max-tokens`` and ``--lenient``: the bound on a pair's length and what to do with
    rows that break it (or cannot be read)."""
    p.add_argument(
        "--max-tokens",
        type=int,
        help="longest prompt + completion, in tokens (default: the model's context window)",
    )
    p.add_argument(
        "--lenient",
        action="store_true",
        help="skip unusable rows and over-long pairs (each is listed) instead of stopping",
    )


def check_length_options(args: argparse.Namespace) -> None:
    if args.max_tokens is not None and args.max_tokens < 1:
        raise UsageError(f"argument --max-tokens: must be at least 1, got {args.max_tokens}")


def within_limits(
    args: argparse.Namespace, pairs: PairSet, model: Any, tokenizer: Any, include_suffix: bool
) -> PairSet:
    """``pairs`` within the token limit (``--max-tokens`` and the model's context window);
    with ``--lenient`` the rows left out, at reading or here, are listed on stderr."""
    import sys

    from unisteer.data.tokens import within_limit
    from unisteer.model.config import token_limit

    limit = token_limit(model, args.max_tokens)
    kept = within_limit(
        tokenizer, pairs, limit, strict=not args.lenient, include_suffix=include_suffix
    )
    for problem in kept.problems:
        print(f"unisteer: skipped {problem}", file=sys.stderr)
    return kept


def field_map(items: list[str] | None) -> dict[str, str] | None:
    fields = {}
    for item in items or []:
        ours, sep, theirs = item.partition("=")
        if not sep or not ours or not theirs:
            raise UsageError(f"--field expects OURS=THEIRS, got {item!r}")
        fields[ours] = theirs
    return fields or None


def load_source(
    args: argparse.Namespace,
    path: str,
    *,
    strict: bool = True,
    model: Any = None,
    tokenizer: Any = None,
) -> PairSet:
    from unisteer.data.sources import load_pairs

    respond = None
    if model is not None:
        from unisteer.generation import base_responder

        respond = base_responder(model, tokenizer)
    return load_pairs(
        path,
        format=args.format,
        fields=field_map(args.field),
        invert=args.invert,
        strict=strict,
        respond=respond,
    )


def pick_split(pairs: PairSet, split: str) -> PairSet:
    """``all`` pairs, or the ``train`` / ``test`` split recorded in the data."""
    if split == "all":
        return pairs
    train, test = pairs.fixed_split()
    return train if split == "train" else test


def register(sub: Any) -> None:
    data = sub.add_parser("data", help="work with polarity-paired data")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser(
        "inspect", help="counts, lengths, examples and problems of a data source"
    )
    p.add_argument("path", help="a file, a saved HF dataset directory, or default[:CONCEPT]")
    add_source_options(p)
    p.add_argument(
        "--model",
        help="count tokens with this model's tokenizer and score the pairs unsteered "
        "(mean PrefOdds, UtilOdds and accuracy at m = 0 per concept and split)",
    )
    p.add_argument("--examples", type=int, default=3)
    p.add_argument(
        "--fail-on-problems",
        action="store_true",
        help="exit with status 1 when rows had to be skipped",
    )
    p.set_defaults(func=inspect)


def inspect(args: argparse.Namespace) -> int:
    from unisteer.data.summary import format_summary, summarize

    model = tokenizer = None
    if args.model:
        from unisteer.model.load import load_model

        model, tokenizer = load_model(args.model)
    pairs = load_source(args, args.path, strict=False, model=model, tokenizer=tokenizer)
    print(format_summary(summarize(pairs, tokenizer, examples=args.examples)))
    if model is not None and len(pairs):
        from unisteer.evaluate.room import base_scores, format_base_scores

        print()
        print(format_base_scores(base_scores(model, tokenizer, pairs), args.model))
    return 1 if pairs.problems and args.fail_on_problems else 0
