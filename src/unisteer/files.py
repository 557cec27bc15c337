"""Writing results: files atomically (a crash never leaves half a file behind) and as plain
JSON (numpy values unwrapped, non-finite floats as ``null``), into output folders checked
before any work starts and held by one process at a time (:class:`OutputLock`)."""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import pandas as pd


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


def write_parquet_atomic(path: str | os.PathLike[str], frame: pd.DataFrame) -> None:
    """``frame`` as Parquet (no index), written atomically."""
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    write_bytes_atomic(path, buf.getvalue())


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


def check_output_dir(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """``path`` as a folder that can be written, checked before any work starts: it must not
    be an existing file, nor lie under one. Raises :class:`~unisteer.errors.UsageError`."""
    from unisteer.errors import UsageError

    p = Path(path)
    for part in (p, *p.parents):
        if part.exists() and not part.is_dir():
            where = "is" if part == p else f"lies under {part}, which is"
            raise UsageError(f"the {what} {p} {where} a file, not a folder: choose another")
    return p


class OutputLock:
    """An exclusive lock on an output folder for as long as a run writes to it.

    ``with OutputLock(folder):`` takes ``folder/.unisteer.lock`` (an advisory ``flock``); a
    second process asking for the same folder is refused at once with a message naming the
    holder's pid, instead of mixing its stages with the first one's. The operating system
    releases the lock when the holder exits, also when it is killed, so a crashed run never
    leaves a stale lock behind. Within one process the lock is re-entrant per folder.
    """

    _held: ClassVar[dict[Path, int]] = {}

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        import fcntl

        from unisteer.errors import UsageError

        check_output_dir(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        key = self.folder.resolve()
        if key in OutputLock._held:
            OutputLock._held[key] += 1
            return self
        path = self.folder / ".unisteer.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UsageError(
                f"{self.folder} is in use by another unisteer process (pid {holder}); wait "
                "for it to finish or choose another output folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        OutputLock._held[key] = 1
        return self

    def __exit__(self, *exc: object) -> None:
        key = self.folder.resolve()
        OutputLock._held[key] -= 1
        if OutputLock._held[key] == 0:
            del OutputLock._held[key]
            if self._fd is not None:
                os.close(self._fd)  # closing releases the flock
                self._fd = None
