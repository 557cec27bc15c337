"""What a module returns: many decoder blocks and attention modules return a tuple whose
first element is the hidden state; the rest (attention weights, caches) is passed along."""

from __future__ import annotations

from typing import Any


def hidden_of(output: Any) -> Any:
    """The hidden state in a module's output: its first element when it is a tuple."""
    return output[0] if isinstance(output, tuple) else output


def with_hidden(output: Any, hidden: Any) -> Any:
    """``output`` with its hidden state replaced by ``hidden`` (the rest of a tuple kept)."""
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
