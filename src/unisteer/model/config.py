"""Every probe of a model's configuration, in one place.

Multimodal models keep the language model's settings in a text sub-config
(``config.get_text_config()``); every question asked of a config here goes through
:func:`text_config`, so a probe is written once. Nothing here detects an architecture by
name: each function reads one documented config field and says what it falls back to.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn


def text_config(model: nn.Module) -> Any:
    """The model's (text) config, or ``None`` for a plain module without one."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        return config.get_text_config()
    return config


def _int_field(model: nn.Module, name: str) -> int | None:
    value = getattr(text_config(model), name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def num_layers(model: nn.Module) -> int | None:
    """``num_hidden_layers``, when the config says."""
    return _int_field(model, "num_hidden_layers")


def config_hidden_size(model: nn.Module) -> int | None:
    """``hidden_size`` (the residual width), when the config says."""
    return _int_field(model, "hidden_size")


def vocab_size(model: nn.Module, default: int = 50000) -> int:
    """``vocab_size``, else ``default`` (used only to size memory budgets)."""
    return _int_field(model, "vocab_size") or default


def widths(model: nn.Module) -> tuple[int, int, int]:
    """``(hidden_size, intermediate_size, num_attention_heads)`` for memory estimates, with the
    usual shapes (1024, 4 × hidden, 16) where the config is silent."""
    d = _int_field(model, "hidden_size") or 1024
    d_ff = _int_field(model, "intermediate_size") or 4 * d
    heads = _int_field(model, "num_attention_heads") or 16
    return d, d_ff, heads


def context_length(model: nn.Module) -> int | None:
    """The longest sequence the model's positions allow: ``max_position_embeddings`` or
    ``n_positions`` (GPT-2); ``None`` when the config names neither (ALiBi models such as
    Bloom have no fixed limit)."""
    return _int_field(model, "max_position_embeddings") or _int_field(model, "n_positions")


def token_limit(model: nn.Module, max_tokens: int | None = None) -> int | None:
    """The longest sequence a pass may take: the model's context window
    (:func:`context_length`) and a user's ``max_tokens``, whichever is smaller; ``None`` when
    neither bounds it (then only the memory check of :mod:`unisteer.model.memory` does)."""
    limits = [n for n in (context_length(model), max_tokens) if n is not None]
    return min(limits) if limits else None


def logit_softcap(model: nn.Module) -> float | None:
    """``final_logit_softcapping`` (Gemma 2: logits = cap·tanh(logits / cap)), or ``None``."""
    cap = getattr(text_config(model), "final_logit_softcapping", None)
    return float(cap) if isinstance(cap, int | float) and cap else None


def logit_scale(model: nn.Module) -> tuple[float, float]:
    """``(factor, divisor)`` the model's forward applies to its logits outside any module,
    before the soft-cap: ``logit_scale`` (Cohere: logits · scale) and ``logits_scaling``
    (Granite: logits / scaling); ``(1.0, 1.0)`` when the config has neither."""
    config = text_config(model)

    def number(name: str) -> float:
        value = getattr(config, name, None)
        ok = isinstance(value, int | float) and not isinstance(value, bool) and value
        return float(value) if ok else 1.0  # type: ignore[arg-type]

    return number("logit_scale"), number("logits_scaling")


def cache_keyword(model: nn.Module) -> str:
    """The name under which the model's forward takes a KV cache (``cache`` in recent
    transformers, ``past_key_values`` before)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def accepts_logits_to_keep(model: nn.Module) -> bool:
    """Whether the model's forward can skip the unembedding (``logits_to_keep``)."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters
