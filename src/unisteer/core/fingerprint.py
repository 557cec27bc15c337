"""A model fingerprint: hashes of the config and of the tokenizer.

A saved delta records the fingerprint of the model it was made for; loading it into another
model is refused (see :mod:`unisteer.persistence`). The config hash ignores what does not
change the computation: the checkpoint's name, dtype, quantisation of the source file and the
library version.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from torch import nn

#: Config keys that do not change what the network computes.
_IGNORED_CONFIG_KEYS = frozenset(
    {
        "_name_or_path",
        "name_or_path",
        "transformers_version",
        "torch_dtype",
        "dtype",
        "quantization_config",
        "architectures",
        "use_cache",
        "output_attentions",
        "output_hidden_states",
        "return_dict",
    }
)


def _digest(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {
            k: _clean(v)
            for k, v in obj.items()
            if k not in _IGNORED_CONFIG_KEYS and not str(k).startswith("_")
        }
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def config_hash(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    if config is None:
        # A plain module: its architecture is its parameter names and shapes.
        return _digest({k: list(v.shape) for k, v in model.state_dict().items()})
    return _digest(_clean(config.to_dict()))


def tokenizer_hash(tokenizer: Any) -> str:
    vocab = tokenizer.get_vocab()
    return _digest(
        {
            "vocab": sorted(vocab.items()),
            "special": sorted(map(str, getattr(tokenizer, "all_special_tokens", []))),
            "chat_template": getattr(tokenizer, "chat_template", None),
        }
    )


def model_fingerprint(model: nn.Module, tokenizer: Any | None = None) -> dict[str, Any]:
    """``{"config": ..., "tokenizer": ... or None, "model_type": ...}``."""
    config = getattr(model, "config", None)
    return {
        "config": config_hash(model),
        "tokenizer": tokenizer_hash(tokenizer) if tokenizer is not None else None,
        "model_type": getattr(config, "model_type", type(model).__name__),
    }


def fingerprint_mismatch(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """A sentence naming what differs, or ``None`` when the fingerprints agree."""
    problems = []
    if saved.get("config") != current.get("config"):
        problems.append(
            f"the model config differs (saved for {saved.get('model_type')!r} config "
            f"{saved.get('config')}, this model is {current.get('model_type')!r} config "
            f"{current.get('config')})"
        )
    s_tok, c_tok = saved.get("tokenizer"), current.get("tokenizer")
    if s_tok is not None and c_tok is not None and s_tok != c_tok:
        problems.append(f"the tokenizer differs (saved {s_tok}, this one {c_tok})")
    return "; ".join(problems) if problems else None
