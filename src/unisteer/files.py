"""Writing result files: atomically (a crash never leaves half a file behind) and as plain
JSON (numpy values unwrapped, non-finite floats as ``null``)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename over ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def json_safe(value: Any) -> Any:
    """A copy of ``value`` made of plain JSON values: numpy scalars and arrays become Python
    numbers and lists, non-finite floats ``None``, tuples lists, dict keys strings, and
    anything else (paths, ...) its ``str``."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        try:
            return json_safe(tolist())
        except (TypeError, ValueError):
            pass
    return str(value)


def write_json_atomic(path: str | os.PathLike[str], value: Any, indent: int = 1) -> None:
    """``value`` through :func:`json_safe`, written atomically with a final newline."""
    text = json.dumps(json_safe(value), indent=indent, allow_nan=False)
    write_text_atomic(path, text + "\n")
