"""A content-addressed cache of judge answers on disk: one small JSON file per key.

Keys are SHA-256 hashes of everything that determines an answer (for the HTTP judge: base URL,
model, temperature and prompt). Files are written atomically, so a crash never leaves half an
entry, and several threads or processes may share a directory. Only the answer is stored.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from unisteer.files import write_text_atomic


def content_key(*parts: Any) -> str:
    """The SHA-256 hex digest of the JSON encoding of ``parts``."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


class DiskCache:
    """``get(key)`` / ``put(key, answer)`` over ``directory/<key[:2]>/<key>.json``."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        try:
            data = json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # missing or unreadable: ask again
        answer = data.get("answer") if isinstance(data, dict) else None
        return answer if isinstance(answer, str) else None

    def put(self, key: str, answer: str) -> None:
        write_text_atomic(self.path(key), json.dumps({"answer": answer}, ensure_ascii=False))
