"""Formatting a query as the model expects it: its chat template, or plain text."""

from __future__ import annotations

from typing import Any

from unisteer.data.conversation import Query, chat_messages
from unisteer.errors import DataError


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def messages(query: Query, system_prompt: str | None = None) -> list[dict[str, str]]:
    """The chat messages of ``query`` (one user turn, or its conversation)."""
    return chat_messages(query, system_prompt)


def prompt_text(tokenizer: Any, query: Query, system_prompt: str | None = None) -> str:
    """The text the model sees before its answer (chat template with generation prompt)."""
    if not has_chat_template(tokenizer):
        if not isinstance(query, str):
            raise DataError(
                "a query that is a conversation needs a chat template; this tokenizer has none"
            )
        return query
    return str(
        tokenizer.apply_chat_template(
            messages(query, system_prompt), add_generation_prompt=True, tokenize=False
        )
    )
