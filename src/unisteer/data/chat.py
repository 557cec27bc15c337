"""Formatting a query as the model expects it: its chat template, or plain text."""

from __future__ import annotations

from typing import Any


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def messages(query: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    msgs.append({"role": "user", "content": query})
    return msgs


def prompt_text(tokenizer: Any, query: str, system_prompt: str | None = None) -> str:
    """The text the model sees before its answer (chat template with generation prompt)."""
    if not has_chat_template(tokenizer):
        return query
    return str(
        tokenizer.apply_chat_template(
            messages(query, system_prompt), add_generation_prompt=True, tokenize=False
        )
    )
