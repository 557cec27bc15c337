"""Queries that are conversations (the paper's open question 2, arXiv 2602.02343 §7).

A pair's query is either one user message (a string) or a conversation: chat messages
``{"role": ..., "content": ...}`` ending with a user turn, the completions being the next
assistant turn. A conversation is held as a tuple of ``(role, content)`` tuples, so a pair
stays hashable and comparable; :func:`query_json` gives it back as a list of messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from unisteer.errors import DataError

Turn = tuple[str, str]  # (role, content)
Query = str | tuple[Turn, ...]

ROLES = ("system", "user", "assistant")


def is_conversation(query: Query) -> bool:
    return not isinstance(query, str)


def parse_query(value: Any) -> Query:
    """A query as given (a string, or a list of chat messages) checked and normalised; a
    :class:`DataError` says what is wrong with which message."""
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        if not value:
            raise DataError("a conversation needs at least one message")
        turns: list[Turn] = []
        for i, message in enumerate(value):
            if isinstance(message, Mapping):
                role, content = message.get("role"), message.get("content")
                extra = set(message) - {"role", "content"}
                if extra:
                    raise DataError(f"message {i}: unknown key {sorted(extra)[0]!r}")
            elif isinstance(message, Sequence) and len(message) == 2:
                role, content = message[0], message[1]
            else:
                raise DataError(f"message {i}: expected {{'role': ..., 'content': ...}}")
            if role not in ROLES:
                raise DataError(f"message {i}: role must be one of {ROLES}, got {role!r}")
            if not isinstance(content, str) or not content.strip():
                raise DataError(f"message {i}: content must be a non-empty string")
            if role == "system" and i != 0:
                raise DataError(f"message {i}: a system message can only come first")
            turns.append((str(role), content))
        if turns[-1][0] != "user":
            raise DataError(
                f"a conversation must end with a user message (the completions answer it); "
                f"the last is {turns[-1][0]!r}"
            )
        return tuple(turns)
    raise DataError(f"a query must be a string or a list of messages, got {type(value).__name__}")


def chat_messages(query: Query, system_prompt: str | None = None) -> list[dict[str, str]]:
    """The messages a chat template renders for ``query``, with ``system_prompt`` first (a
    conversation that has its own system message cannot take another)."""
    if isinstance(query, str):
        turns: tuple[Turn, ...] = (("user", query),)
    else:
        turns = query
    if system_prompt and turns[0][0] == "system":
        raise DataError("the conversation has its own system message; give no system prompt")
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return msgs + [{"role": role, "content": content} for role, content in turns]


def query_json(query: Query) -> str | list[dict[str, str]]:
    """The query as a JSON value: the string, or the list of messages."""
    if isinstance(query, str):
        return query
    return [{"role": role, "content": content} for role, content in query]


def query_text(query: Query) -> str:
    """The query as one readable string (reports, lengths): the string itself, or each
    message on its own line as ``role: content``."""
    if isinstance(query, str):
        return query
    return "\n".join(f"{role}: {content}" for role, content in query)


__all__ = [
    "Query",
    "Turn",
    "chat_messages",
    "is_conversation",
    "parse_query",
    "query_json",
    "query_text",
]
