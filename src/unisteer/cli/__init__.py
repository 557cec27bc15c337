"""The command line: a thin layer over the public API, one module per subcommand.

Each subcommand module has ``register(subparsers)``, which adds its parser and sets ``func``
to a handler that parses arguments, calls the public API and prints.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from unisteer._version import __version__
from unisteer.cli import data, demo, eval, fit, run, sweep, train
from unisteer.errors import UnisteerError

SUBCOMMANDS = (run, demo, data, train, sweep, fit, eval)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unisteer", description="Steer language models with one affine delta."
    )
    parser.add_argument("--version", action="version", version=f"unisteer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def _join_negative_values(argv: list[str]) -> list[str]:
    """Let ``--ms -4:4:21`` through: argparse would read ``-4:4:21`` as an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if (
            argv[i] in ("--ms", "--multipliers")
            and i + 1 < len(argv)
            and argv[i + 1].startswith("-")
        ):
            out.append(f"{argv[i]}={argv[i + 1]}")
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
    except (UnisteerError, ValueError) as e:  # bad input: a message, not a traceback
        print(f"unisteer: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("unisteer: interrupted", file=sys.stderr)
        return 130
