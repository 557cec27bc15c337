"""Serving steered generation over the OpenAI API, with per-request steering.

>>> server = unisteer.serve.open_server(model, tok, {"optimism": "unisteer-out/default/
...     methods/vector-split/delta"}, port=8000).start()

:mod:`~unisteer.serve.engine` batches concurrent requests (each row its own deltas and ``m``),
:mod:`~unisteer.model.kv` keeps the batch's KV cache as rows join and leave,
:mod:`~unisteer.serve.protocol` checks the OpenAI bodies, :mod:`~unisteer.serve.registry`
loads the deltas and their fitted curves, :mod:`~unisteer.serve.server` is the HTTP layer and
:mod:`~unisteer.serve.playground` the page at ``/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unisteer.serve.engine import Engine, Job, SteerSpec
from unisteer.serve.registry import Loaded, load_all
from unisteer.serve.server import App, Server, Settings


def open_server(
    model: Any,
    tokenizer: Any,
    deltas: Mapping[str, str | Path] | None = None,
    *,
    model_id: str = "model",
    host: str = "127.0.0.1",
    port: int = 8000,
    max_m: float = 100.0,
    api_key: str | None = None,
    max_batch: int = 16,
    max_waiting: int = 64,
) -> Server:
    """A server for ``model`` with ``deltas`` (name → saved delta or set) loaded; call
    ``.start()`` (a background thread) or ``.serve_forever()``."""
    loaded = load_all((deltas or {}).items(), model, tokenizer)
    settings = Settings(model_id=model_id, max_m=max_m, api_key=api_key)
    app = App(model, tokenizer, loaded, settings, max_batch=max_batch, max_waiting=max_waiting)
    return Server(app, host, port)


__all__ = ["App", "Engine", "Job", "Loaded", "Server", "Settings", "SteerSpec", "open_server"]
