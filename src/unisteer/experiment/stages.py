"""Cached, resumable stages: a stage's outputs count only when its key matches.

Each stage owns a folder. When it has written all its outputs (each atomically), it writes
``stage.json`` last, with the digest of its key (everything its outputs depend on: settings,
the keys of the stages it reads, the library version). A rerun skips a stage whose
``stage.json`` holds the same digest; anything else (no file, another key, an interrupted
write) runs the stage again.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unisteer.files import write_text_atomic

STAGE_FILE = "stage.json"


def digest(value: Any) -> str:
    """A stable SHA-256 of a JSON-serialisable value."""
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Stage:
    """One cached step of an experiment, writing into ``directory``."""

    directory: Path
    key: dict[str, Any]
    started: float = field(default=0.0, init=False)

    @property
    def digest(self) -> str:
        return digest(self.key)

    def done(self) -> bool:
        try:
            saved = json.loads((self.directory / STAGE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(saved, dict) and saved.get("digest") == self.digest

    def info(self) -> dict[str, Any]:
        """What ``finish`` recorded (empty when the stage is not done)."""
        if not self.done():
            return {}
        data = json.loads((self.directory / STAGE_FILE).read_text(encoding="utf-8"))
        return dict(data.get("info", {}))

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / STAGE_FILE).unlink(missing_ok=True)
        self.started = time.perf_counter()

    def finish(self, **info: Any) -> float:
        seconds = time.perf_counter() - self.started
        record = {"digest": self.digest, "key": self.key, "info": {**info, "seconds": seconds}}
        write_text_atomic(
            self.directory / STAGE_FILE, json.dumps(record, indent=1, default=str) + "\n"
        )
        return seconds
