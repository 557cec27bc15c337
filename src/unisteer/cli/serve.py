"""``unisteer serve``: the OpenAI-compatible server with per-request steering."""

from __future__ import annotations

import argparse
import os
from typing import Any

from unisteer.errors import UsageError


def register(sub: Any) -> None:
    from unisteer.model import DEFAULT_MODEL

    p = sub.add_parser(
        "serve",
        help="an OpenAI-compatible server; each request chooses its deltas and m",
        description="Serve /v1/models, /v1/chat/completions, /v1/completions (streaming too) and "
        'a playground page at /. A request steers with "steering": [{"delta": NAME, "m": '
        '4.0, "positions": "completion"}] in its body (the OpenAI client\'s extra_body).',
    )
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--delta", action="append", default=[], metavar="NAME=DIR",
                   help="a saved delta or set to offer under NAME (repeatable)")  # fmt: skip
    p.add_argument("--experiment", action="append", default=[], metavar="DIR",
                   help="an experiment's output folder: offer every method's delta, named "
                   "after the method, with its chosen m and fitted curves")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    p.add_argument("--port", type=int, default=8000, help="0: any free port (printed)")
    p.add_argument("--max-m", type=float, default=100.0, help="the largest |m| a request may ask")
    p.add_argument("--max-batch", type=int, default=16, help="requests decoded together")
    p.add_argument("--max-waiting", type=int, default=64, help="queued requests before 429")
    p.add_argument("--api-key-env", default="UNISTEER_API_KEY",
                   help="environment variable with the API key; unset: none needed")  # fmt: skip
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: the CPU)")
    p.set_defaults(func=serve)


def _named(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise UsageError(f"argument --delta: expected NAME=DIR, got {text!r}")
    return name, path


def serve(args: argparse.Namespace) -> int:
    import torch

    import unisteer
    from unisteer.serve import open_server
    from unisteer.serve.registry import experiment_deltas

    if not 0 <= args.port < 65536:  # 0: any free port
        raise UsageError(f"argument --port: {args.port} is not a port")
    if not args.max_m > 0:
        raise UsageError("argument --max-m: must be positive")
    specs = [_named(t) for t in args.delta]
    for folder in args.experiment:
        specs += [(name, str(path)) for name, path in experiment_deltas(folder)]
    model, tok = unisteer.load_model(
        args.model, dtype=getattr(torch, args.dtype), device=args.device
    )
    key = os.environ.get(args.api_key_env) or None
    server = open_server(
        model, tok, dict(specs), model_id=args.model, host=args.host, port=args.port,
        max_m=args.max_m, api_key=key, max_batch=args.max_batch, max_waiting=args.max_waiting,
    )  # fmt: skip
    names = ", ".join(server.app.deltas) or "none"
    print(f"serving {args.model} at {server.url} (deltas: {names}; playground at {server.url}/)")
    print("API key required" if key else f"no API key ({args.api_key_env} is unset)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    return 0
