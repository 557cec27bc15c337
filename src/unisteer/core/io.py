"""Saving and loading deltas: safetensors for the numbers, JSON for everything else.

A delta directory holds ``delta.safetensors`` and ``delta.json``. Each file is written
atomically, the tensors first; the JSON records the SHA-256 of the tensor file, so a directory
left inconsistent by a crash between the two writes is detected on load. Pickle-based formats
(``.pt``, ``.bin``, ...) are never loaded.
"""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path
from typing import Any, cast

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from unisteer._version import __version__
from unisteer.core.delta import KINDS, Delta, Kind, SiteKind
from unisteer.core.fingerprint import fingerprint_mismatch, model_fingerprint
from unisteer.core.sites import check_site
from unisteer.core.steering_set import Steerable, SteeringSet
from unisteer.errors import DeltaLoadError, SiteError, UnisteerError
from unisteer.files import write_bytes_atomic, write_text_atomic

TENSORS_FILE = "delta.safetensors"
META_FILE = "delta.json"
FORMAT = "unisteer.delta"
FORMAT_VERSION = 1
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")


def delta_metadata(delta: Delta) -> dict[str, Any]:
    """The JSON description of a delta (without the tensor hash)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": delta.kind,
        "site": delta.site,
        "site_kind": delta.site_kind,
        "layer": delta.layer,
        "d_in": delta.d_in,
        "d_out": delta.d_out,
        "rank": delta.rank,
        "experts": delta.experts,
        "per_expert": delta.per_expert,
        "dtype": "float32",
        "shapes": {k: list(v) for k, v in delta.expected_shapes().items()},
        "num_parameters": delta.num_parameters(),
        "meta": delta.meta,
        "fingerprint": delta.fingerprint,
        "unisteer_version": __version__,
    }


def save_delta(delta: Delta, directory: str | Path) -> Path:
    """Write the delta to ``directory`` (created if needed); returns the directory."""
    out = Path(directory)
    tensors = {
        k: v.detach().to("cpu", torch.float32).contiguous() for k, v in delta.tensors().items()
    }
    blob = st_save(tensors, metadata={"format": FORMAT})
    meta = delta_metadata(delta)
    meta["tensors_sha256"] = hashlib.sha256(blob).hexdigest()
    try:
        text = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"delta.meta must be JSON-serialisable (finite numbers only): {e}") from e
    write_bytes_atomic(out / TENSORS_FILE, blob)
    write_text_atomic(out / META_FILE, text + "\n")
    return out


def _refuse_pickles(path: Path) -> None:
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise DeltaLoadError(
            f"refusing to load {path}: {path.suffix} files are pickles, which can run arbitrary "
            f"code. unisteer reads only {TENSORS_FILE} + {META_FILE}."
        )


def _require(meta: dict[str, Any], key: str, typ: type, where: Path) -> Any:
    if key not in meta:
        raise DeltaLoadError(f"{where}: missing key {key!r}")
    value = meta[key]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise DeltaLoadError(
            f"{where}: key {key!r} should be {typ.__name__}, got {type(value).__name__}"
        )
    return value


#: Limits on what ``delta.json`` and ``delta.safetensors`` may be, checked before they are read.
MAX_META_BYTES = 16 << 20
MAX_TENSOR_BYTES = 64 << 30
MAX_JSON_DEPTH = 64


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """How deeply ``value`` nests lists and objects, counting no further than ``limit + 1``
    (without recursion, so any depth is safe)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict | list):
            deepest = max(deepest, d)
            if d > limit:
                return d
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def read_regular_file(path: Path, limit: int, what: str) -> bytes:
    """The bytes of ``path``, refusing what is not a regular file (a device such as
    /dev/zero, a fifo) or is larger than ``limit`` bytes, before reading it."""
    try:
        info = path.stat()
    except OSError as e:
        raise DeltaLoadError(f"cannot read {path}: {e.strerror or e}") from e
    if not stat.S_ISREG(info.st_mode):
        raise DeltaLoadError(f"{path} is not a regular file; a {what} must be one")
    if info.st_size > limit:
        raise DeltaLoadError(f"{path} is {info.st_size} bytes, more than a {what} may be ({limit})")
    try:
        return path.read_bytes()
    except OSError as e:
        raise DeltaLoadError(f"cannot read {path}: {e.strerror or e}") from e


def _read_meta(path: Path, fmt: str = FORMAT) -> dict[str, Any]:
    raw = read_regular_file(path, MAX_META_BYTES, path.name)
    try:
        meta = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise DeltaLoadError(f"{path}: nested too deeply to be a {path.name}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DeltaLoadError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(meta, dict):
        raise DeltaLoadError(f"{path}: expected a JSON object")
    if json_depth(meta) > MAX_JSON_DEPTH:
        raise DeltaLoadError(f"{path}: nested more than {MAX_JSON_DEPTH} levels deep")
    _check_key_types(meta, path)
    if meta.get("format") != fmt:
        what = "delta" if fmt == FORMAT else "steering set"
        raise DeltaLoadError(f"{path}: not a unisteer {what} (format={meta.get('format')!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DeltaLoadError(
            f"{path}: format_version {version!r} is newer than this unisteer understands "
            f"({FORMAT_VERSION}); upgrade unisteer"
        )
    return meta


def _check_key_types(meta: dict[str, Any], path: Path) -> None:
    """The optional keys of a delta's description have the right JSON types."""
    for key, kinds in (
        ("meta", (dict,)),
        ("fingerprint", (dict, type(None))),
        ("layer", (int, type(None))),
        ("rank", (int, type(None))),
        ("experts", (int, type(None))),
        ("tensors_sha256", (str, type(None))),
    ):
        value = meta.get(key)
        if key in meta and (not isinstance(value, kinds) or isinstance(value, bool)):
            names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            raise DeltaLoadError(
                f"{path}: key {key!r} should be {names}, got {type(value).__name__}"
            )


def _tensors_of(
    blob: bytes, meta: dict[str, Any], meta_path: Path, tensors_path: Path
) -> dict[str, torch.Tensor]:
    """The tensors in ``blob``, after checking the SHA-256 ``meta`` recorded for them."""
    expected_hash = meta.get("tensors_sha256")
    if expected_hash is not None and hashlib.sha256(blob).hexdigest() != expected_hash:
        raise DeltaLoadError(
            f"{tensors_path} does not match the hash recorded in {meta_path}: the directory was "
            "modified or only partly written. Save the delta again."
        )
    try:
        tensors = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise DeltaLoadError(f"{tensors_path} is not a valid safetensors file: {e}") from e
    return tensors


def _delta_from(
    meta: dict[str, Any], tensors: dict[str, torch.Tensor], meta_path: Path, tensors_path: Path
) -> Delta:
    """A delta from its JSON description and its tensors, every key, shape and value checked
    (errors name ``meta_path`` and ``tensors_path``)."""
    kind = _require(meta, "kind", str, meta_path)
    if kind not in KINDS:
        raise DeltaLoadError(f"{meta_path}: unknown kind {kind!r} (expected one of {KINDS})")
    site = _require(meta, "site", str, meta_path)
    site_kind = _require(meta, "site_kind", str, meta_path)
    d_in = _require(meta, "d_in", int, meta_path)
    d_out = _require(meta, "d_out", int, meta_path)
    layer = meta.get("layer")
    rank = meta.get("rank")
    experts = meta.get("experts")
    per_expert = meta.get("per_expert", True)
    if not isinstance(per_expert, bool):
        raise DeltaLoadError(f"{meta_path}: 'per_expert' must be true or false, got {per_expert!r}")
    try:
        delta = Delta(
            cast(Kind, kind),
            d_in,
            d_out,
            site=site,
            site_kind=cast(SiteKind, site_kind),
            layer=layer,
            rank=rank,
            meta=meta.get("meta") or {},
            fingerprint=meta.get("fingerprint"),
            experts=experts,
            per_expert=per_expert,
        )
    except ValueError as e:
        raise DeltaLoadError(f"{meta_path}: {e}") from e
    expected = delta.expected_shapes()
    names = set(expected)
    if set(tensors) != names:
        raise DeltaLoadError(
            f"{tensors_path} holds tensors {sorted(tensors)}, a {kind} delta needs {sorted(names)}"
        )
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise DeltaLoadError(
                f"{tensors_path}: tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                f"{meta_path} says {shape}"
            )
    for name, t in tensors.items():
        if not bool(torch.isfinite(t.float()).all()):
            raise DeltaLoadError(
                f"{tensors_path}: tensor {name!r} holds NaN or infinite values; the delta is "
                "unusable (was its training diverging?)"
            )
    delta.load_tensors(tensors)
    return delta


def load_delta(
    path: str | Path,
    model: nn.Module | None = None,
    *,
    tokenizer: Any | None = None,
    check_fingerprint: bool = True,
) -> Delta:
    """Load a delta saved by :meth:`Delta.save`.

    With ``model``, the site must exist in it with the saved shapes, and (unless
    ``check_fingerprint=False``) the model's fingerprint must match the saved one; the
    tokenizer is compared too when given. Any mismatch raises :class:`DeltaLoadError` naming it.
    """
    p = Path(path)
    _refuse_pickles(p)
    directory = p.parent if p.name in (TENSORS_FILE, META_FILE) else p
    meta_path, tensors_path = directory / META_FILE, directory / TENSORS_FILE
    if not meta_path.exists():
        pickles = (
            sorted(f.name for f in directory.glob("*") if f.suffix.lower() in _PICKLE_SUFFIXES)
            if directory.is_dir()
            else []
        )
        hint = (
            f" It holds {', '.join(pickles)}: pickle files are refused, as they can run "
            "arbitrary code."
            if pickles
            else ""
        )
        raise DeltaLoadError(f"no {META_FILE} in {directory}: not a saved unisteer delta.{hint}")
    meta = _read_meta(meta_path)
    blob = read_regular_file(tensors_path, MAX_TENSOR_BYTES, "delta.safetensors")
    tensors = _tensors_of(blob, meta, meta_path, tensors_path)
    delta = _delta_from(meta, tensors, meta_path, tensors_path)

    if model is not None:
        _check_fits(delta, model, tokenizer, check_fingerprint, directory)
    return delta


def _check_fits(
    delta: Delta, model: nn.Module, tokenizer: Any | None, check_fingerprint: bool, where: Path
) -> None:
    try:
        check_site(model, delta)
    except SiteError as e:
        raise DeltaLoadError(f"the delta in {where} does not fit this model: {e}") from None
    if check_fingerprint and delta.fingerprint:
        problem = fingerprint_mismatch(delta.fingerprint, model_fingerprint(model, tokenizer))
        if problem:
            raise DeltaLoadError(
                f"the delta in {where} was made for another model: {problem}. Pass "
                "check_fingerprint=False to load it anyway."
            )


# -- steering sets ------------------------------------------------------------------------------

SET_TENSORS_FILE = "steering_set.safetensors"
SET_META_FILE = "steering_set.json"
SET_FORMAT = "unisteer.steering_set"


def save_steering_set(steering_set: SteeringSet, directory: str | Path) -> Path:
    """Write a steering set to ``directory``: one safetensors file (member ``i``'s tensors
    under ``"{i}.{name}"``) and one JSON file (each member's description, as
    :func:`delta_metadata`, and the set's ``meta`` and fingerprint), the tensors first, the
    JSON recording their SHA-256."""
    out = Path(directory)
    tensors = {
        f"{i}.{k}": v.detach().to("cpu", torch.float32).contiguous()
        for i, d in enumerate(steering_set)
        for k, v in d.tensors().items()
    }
    blob = st_save(tensors, metadata={"format": SET_FORMAT})
    meta = {
        "format": SET_FORMAT,
        "format_version": FORMAT_VERSION,
        "members": [delta_metadata(d) for d in steering_set],
        "meta": steering_set.meta,
        "fingerprint": steering_set.fingerprint,
        "num_parameters": steering_set.num_parameters(),
        "unisteer_version": __version__,
        "tensors_sha256": hashlib.sha256(blob).hexdigest(),
    }
    try:
        text = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"the set's meta must be JSON-serialisable (finite numbers only): {e}"
        ) from e
    write_bytes_atomic(out / SET_TENSORS_FILE, blob)
    write_text_atomic(out / SET_META_FILE, text + "\n")
    return out


def load_steering_set(
    path: str | Path,
    model: nn.Module | None = None,
    *,
    tokenizer: Any | None = None,
    check_fingerprint: bool = True,
) -> SteeringSet:
    """Load a steering set saved by :func:`save_steering_set`, checked as :func:`load_delta`
    checks a delta (every member's site, and the fingerprint, against ``model`` when given)."""
    p = Path(path)
    _refuse_pickles(p)
    directory = p.parent if p.name in (SET_TENSORS_FILE, SET_META_FILE) else p
    meta_path, tensors_path = directory / SET_META_FILE, directory / SET_TENSORS_FILE
    if not meta_path.exists():
        raise DeltaLoadError(f"no {SET_META_FILE} in {directory}: not a saved steering set")
    meta = _read_meta(meta_path, SET_FORMAT)
    members = meta.get("members")
    if not isinstance(members, list) or not members:
        raise DeltaLoadError(f"{meta_path}: 'members' should be a non-empty list")
    for key, kinds in (("meta", (dict,)), ("fingerprint", (dict, type(None)))):
        if key in meta and not isinstance(meta[key], kinds):
            raise DeltaLoadError(f"{meta_path}: key {key!r} has the wrong type")
    blob = read_regular_file(tensors_path, MAX_TENSOR_BYTES, SET_TENSORS_FILE)
    tensors = _tensors_of(blob, meta, meta_path, tensors_path)
    deltas = []
    for i, member in enumerate(members):
        where = Path(f"{meta_path} (member {i})")
        if not isinstance(member, dict):
            raise DeltaLoadError(f"{where}: expected a JSON object")
        _check_key_types(member, where)
        prefix = f"{i}."
        own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        deltas.append(_delta_from(member, own, where, tensors_path))
    known = {f"{i}.{k}" for i, d in enumerate(deltas) for k in d.tensors()}
    stray = sorted(set(tensors) - known)
    if stray:
        raise DeltaLoadError(f"{tensors_path} holds tensors no member uses: {stray[:5]}")
    try:
        loaded = SteeringSet(
            deltas, meta=meta.get("meta") or {}, fingerprint=meta.get("fingerprint")
        )
    except UnisteerError as e:
        raise DeltaLoadError(f"{meta_path}: {e}") from None
    if model is not None:
        for d in loaded:
            _check_fits(d, model, tokenizer, check_fingerprint, directory)
    return loaded


def save_steerable(steerable: Steerable, directory: str | Path) -> Path:
    """:func:`save_delta` for a delta, :func:`save_steering_set` for a set."""
    if isinstance(steerable, SteeringSet):
        return save_steering_set(steerable, directory)
    return save_delta(steerable, directory)


def load_steerable(
    path: str | Path,
    model: nn.Module | None = None,
    *,
    tokenizer: Any | None = None,
    check_fingerprint: bool = True,
) -> Steerable:
    """A saved delta or steering set, whichever ``path`` holds."""
    p = Path(path)
    directory = p.parent if p.name in (SET_TENSORS_FILE, SET_META_FILE) else p
    if (directory / SET_META_FILE).exists():
        return load_steering_set(
            directory, model, tokenizer=tokenizer, check_fingerprint=check_fingerprint
        )
    return load_delta(path, model, tokenizer=tokenizer, check_fingerprint=check_fingerprint)
