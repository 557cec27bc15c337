"""The command line: a thin layer over the public API, one module per subcommand.

Each subcommand module has ``register(subparsers)``, which adds its parser and sets ``func``
to a handler that parses arguments, calls the public API and prints.
"""

from __future__ import annotations

import _thread
import argparse
import logging
import os
import sys
import tempfile
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unisteer._version import __version__
from unisteer.cli import data, demo, eval, export, fit, import_, run, serve, sweep, train
from unisteer.errors import UnisteerError

SUBCOMMANDS = (run, demo, data, train, sweep, fit, eval, export, import_, serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unisteer", description="Steer language models with one affine delta."
    )
    parser.add_argument("--version", action="version", version=f"unisteer {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error instead of a line"
    )
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


def _crash_log(exc: BaseException) -> Path:
    """Write ``exc``'s traceback to a new file in the temporary directory; its path."""
    fd, name = tempfile.mkstemp(prefix="unisteer-error-", suffix=".log")
    with os.fdopen(fd, "w") as f:
        f.write(f"unisteer {__version__}, argv {sys.argv!r}\n\n")
        traceback.print_exception(exc, file=f)
    return Path(name)


def main(argv: Sequence[str] | None = None) -> int:
    """The error boundary: bad input (a :class:`UnisteerError`, a ``ValueError`` from a
    parser, an ``OSError`` naming a path) becomes one ``unisteer: error:`` line and exit
    status 2; anything else is a bug in unisteer: one line naming a log file that holds the
    traceback, exit status 1. ``--debug`` lets every exception through with its traceback."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = build_parser().parse_args(
        _join_negative_values(list(sys.argv[1:] if argv is None else argv))
    )
    if getattr(args, "debug", False):
        return int(args.func(args))
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _redeliver_interrupt
    try:
        return int(args.func(args))
    except (UnisteerError, ValueError) as e:  # bad input: a message, not a traceback
        print(f"unisteer: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path that cannot be read or written
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"unisteer: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("unisteer: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: say so in one line, keep the traceback in a file
        log = _crash_log(e)
        print(
            f"unisteer: internal error ({type(e).__name__}: {e}); the traceback is in {log}. "
            "Please report it; --debug shows it here.",
            file=sys.stderr,
        )
        return 1
    finally:
        sys.unraisablehook = previous_hook


def _redeliver_interrupt(unraisable: Any) -> None:
    """Ctrl-C that lands inside a finalizer or weakref callback is one Python can only print
    ("Exception ignored in ...", a traceback) and drop; deliver it again to the main thread a
    moment later, outside this hook, where the boundary above turns it into ``unisteer:
    interrupted``."""
    try:
        if not issubclass(unraisable.exc_type, KeyboardInterrupt):
            sys.__unraisablehook__(unraisable)
            return
    except KeyboardInterrupt:  # a second Ctrl-C while this ran: one redelivery serves both
        pass
    timer = threading.Timer(0.05, _thread.interrupt_main)
    timer.daemon = True
    timer.start()
