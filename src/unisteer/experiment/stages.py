"""Cached, resumable stages: a stage's outputs count only when its key and their bytes match.

Each stage owns a folder. When it has written all its outputs (each atomically), it writes
``stage.json`` last, with the digest of its key (everything its outputs depend on: settings,
the keys of the stages it reads, the library version) and the SHA-256 of every file it wrote.
A rerun skips a stage only when ``stage.json`` is well formed, holds the same digest, and
every file it lists still has the recorded content; anything else (no file, another key, an
interrupted write, a file changed or replaced since) runs the stage again. So a stage never
reads back an output that was written for another digest (docs/architecture.md, "Rules").
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unisteer.files import write_text_atomic

STAGE_FILE = "stage.json"
#: ``stage.json`` is written by us and small; a larger one is not ours.
MAX_STAGE_BYTES = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")

log = logging.getLogger(__name__)


def digest(value: Any) -> str:
    """A stable SHA-256 of a JSON-serialisable value."""
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _outputs(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` but ``stage.json``, by relative POSIX path: its SHA-256."""
    return {
        p.relative_to(directory).as_posix(): file_sha256(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != STAGE_FILE
    }


def read_record(path: Path) -> dict[str, Any] | None:
    """``stage.json`` checked against its schema, or ``None`` (with a warning naming the file
    and the key) when it is missing, unreadable or malformed."""
    try:
        size = path.stat().st_size
    except OSError:
        return None
    problem = None
    record: Any = None
    if size > MAX_STAGE_BYTES:
        problem = f"is {size} bytes, more than {MAX_STAGE_BYTES}"
    else:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
            problem = f"is not valid JSON ({type(e).__name__})"
    if problem is None:
        if not isinstance(record, dict):
            problem = "does not hold a JSON object"
        elif not isinstance(record.get("digest"), str) or not _SHA256.fullmatch(record["digest"]):
            problem = "key 'digest' is not a SHA-256 hex string"
        elif not isinstance(record.get("info", {}), dict):
            problem = "key 'info' is not an object"
        elif not isinstance(record.get("files"), dict) or not all(
            isinstance(k, str) and isinstance(v, str) and _SHA256.fullmatch(v)
            for k, v in record["files"].items()
        ):
            problem = "key 'files' is not an object of file name -> SHA-256"
    if problem is not None:
        log.warning("unisteer: %s %s; the stage runs again", path, problem)
        return None
    return dict(record)


def _intact(directory: Path, files: dict[str, str]) -> str | None:
    """``None`` when every listed file has its recorded SHA-256; else what differs."""
    for name, sha in files.items():
        path = directory / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            return f"{name!r} lies outside the stage folder"
        if not path.is_file():
            return f"{name} is missing"
        if file_sha256(path) != sha:
            return f"{name} changed since the stage wrote it"
    return None


@dataclass
class Stage:
    """One cached step of an experiment, writing into ``directory``."""

    directory: Path
    key: dict[str, Any]
    started: float = field(default=0.0, init=False)

    @property
    def digest(self) -> str:
        return digest(self.key)

    def _record(self) -> dict[str, Any] | None:
        """The stage's record when it is done under this key with its outputs intact."""
        path = self.directory / STAGE_FILE
        record = read_record(path)
        if record is None or record["digest"] != self.digest:
            return None
        changed = _intact(self.directory, record["files"])
        if changed is not None:
            log.warning("unisteer: %s: %s; the stage runs again", path, changed)
            return None
        return record

    def done(self) -> bool:
        return self._record() is not None

    @property
    def content_digest(self) -> str:
        """A digest of the key and of what the stage wrote (its files' SHA-256): the stages
        that read this one's outputs put it in their keys, so they run again when that content
        changed, not only when its settings did."""
        record = self._record()
        if record is None:
            raise RuntimeError(f"{self.directory}: the stage is not done")
        return digest({"key": self.digest, "files": record["files"]})

    def info(self) -> dict[str, Any]:
        """What ``finish`` recorded (empty when the stage is not done)."""
        record = self._record()
        return {} if record is None else dict(record.get("info", {}))

    def start(self) -> None:
        """Empty the stage's folder (``stage.json`` first), so that what ``finish`` records is
        exactly what this run wrote."""
        (self.directory / STAGE_FILE).unlink(missing_ok=True)
        if self.directory.exists():
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True)
        self.started = time.perf_counter()

    def finish(self, **info: Any) -> float:
        seconds = time.perf_counter() - self.started
        record = {
            "digest": self.digest,
            "key": self.key,
            "files": _outputs(self.directory),
            "info": {**info, "seconds": seconds},
        }
        write_text_atomic(
            self.directory / STAGE_FILE, json.dumps(record, indent=1, default=str) + "\n"
        )
        return seconds
