"""The OpenAI API as the server speaks it: request bodies checked into typed requests, and the
response objects (completions, chat completions, their streamed chunks, errors).

A request chooses its steering in the body, beside the OpenAI fields (the official client's
``extra_body``)::

    "steering": [{"delta": "optimism", "m": 4.0, "positions": "completion"}]

``positions`` is ``"all"`` (default), ``"prompt"`` or ``"completion"``, as in
:func:`unisteer.generation.generate`. No ``steering`` is the base model. Every problem is an
:class:`ApiError` that names the field (``param``), with the HTTP status it is answered with.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from unisteer.data.conversation import Query, parse_query
from unisteer.errors import DataError

POSITIONS = ("all", "prompt", "completion")
DEFAULT_MAX_TOKENS = 256
MAX_STOP = 4


class ApiError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass(frozen=True)
class SteeringRequest:
    """One entry of a request's ``steering``: a loaded delta's name, ``m`` and positions."""

    delta: str
    m: float
    positions: Literal["all", "prompt", "completion"] = "all"


@dataclass(frozen=True)
class GenerationRequest:
    """A checked ``/v1/chat/completions`` (``chat``: ``query`` is a conversation or a message)
    or ``/v1/completions`` (``query`` is the raw prompt text) request."""

    chat: bool
    query: Query
    model: str | None
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    steering: tuple[SteeringRequest, ...] | None  # None: not given (the model's default)


CHAT_KEYS = {
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed",
    "stop", "stream", "stream_options", "n", "steering", "user", "frequency_penalty",
    "presence_penalty", "logit_bias", "logprobs", "top_logprobs", "response_format",
}  # fmt: skip
COMPLETION_KEYS = (CHAT_KEYS - {"messages", "max_completion_tokens", "response_format"}) | {
    "prompt",
    "echo",
    "suffix",
    "best_of",
}


def _number(body: Mapping[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, f"{key} must be a finite number, got {value!r}", param=key)
    if not lo <= float(value) <= hi:
        raise ApiError(400, f"{key} must be between {lo:g} and {hi:g}, got {value}", param=key)
    return float(value)


def _integer(body: Mapping[str, Any], key: str, lo: int, hi: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{key} must be an integer, got {value!r}", param=key)
    if value < lo or (hi is not None and value > hi):
        bound = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise ApiError(400, f"{key} must be {bound}, got {value}", param=key)
    return int(value)


def _unsupported(body: Mapping[str, Any]) -> None:
    """Fields we accept but cannot honour refuse, rather than being silently ignored."""
    if body.get("n", 1) != 1:
        raise ApiError(400, "n must be 1 (one completion per request)", param="n")
    if body.get("best_of", 1) != 1:
        raise ApiError(400, "best_of must be 1", param="best_of")
    for key in ("frequency_penalty", "presence_penalty"):
        if body.get(key, 0) not in (0, 0.0, None):
            raise ApiError(400, f"{key} is not supported (only 0)", param=key)
    for key in ("logit_bias", "suffix"):
        if body.get(key):
            raise ApiError(400, f"{key} is not supported", param=key)
    for key in ("logprobs", "echo"):
        if body.get(key):
            raise ApiError(400, f"{key} is not supported yet", param=key)
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, Mapping) or fmt.get("type") != "text"):
        raise ApiError(400, "response_format must be {'type': 'text'}", param="response_format")


def parse_steering(value: Any) -> tuple[SteeringRequest, ...]:
    """``steering`` as given: a list of ``{"delta", "m", "positions"?}`` (or one such object)."""
    items = [value] if isinstance(value, Mapping) else value
    if not isinstance(items, list):
        raise ApiError(400, "steering must be a list of {delta, m, positions}", param="steering")
    out = []
    for i, item in enumerate(items):
        where = f"steering[{i}]"
        if not isinstance(item, Mapping):
            raise ApiError(400, f"{where} must be an object {{delta, m, positions}}", param=where)
        extra = set(item) - {"delta", "m", "positions"}
        if extra:
            raise ApiError(400, f"{where}: unknown key {sorted(extra)[0]!r}", param=where)
        name = item.get("delta")
        if not isinstance(name, str) or not name:
            raise ApiError(400, f"{where}.delta must be a delta's name", param=f"{where}.delta")
        m = item.get("m", 1.0)
        if isinstance(m, bool) or not isinstance(m, int | float) or not math.isfinite(m):
            raise ApiError(400, f"{where}.m must be a finite number, got {m!r}", param=f"{where}.m")
        positions = item.get("positions", "all")
        if positions not in POSITIONS:
            raise ApiError(
                400,
                f"{where}.positions must be one of {POSITIONS}, got {positions!r}",
                param=f"{where}.positions",
            )
        out.append(SteeringRequest(name, float(m), positions))
    return tuple(out)


def _messages(value: Any) -> Query:
    if not isinstance(value, list) or not value:
        raise ApiError(400, "messages must be a non-empty list", param="messages")
    turns = []
    for i, message in enumerate(value):
        if not isinstance(message, Mapping):
            raise ApiError(400, f"messages[{i}] must be an object", param=f"messages[{i}]")
        content = message.get("content")
        if isinstance(content, list):  # content parts: text only
            texts = []
            for part in content:
                if not isinstance(part, Mapping) or part.get("type") != "text":
                    raise ApiError(
                        400, f"messages[{i}]: only text content parts are supported",
                        param=f"messages[{i}].content",
                    )  # fmt: skip
                texts.append(str(part.get("text", "")))
            content = "".join(texts)
        role = message.get("role")
        if role == "developer":
            role = "system"
        turns.append({"role": role, "content": content})
    try:
        query = parse_query(turns)
    except DataError as e:
        raise ApiError(400, str(e), param="messages") from None
    if len(query) == 1 and query[0][0] == "user":
        return query[0][1]  # one user message: the same prompt generate() would make
    return query


def parse_request(body: Any, *, chat: bool) -> GenerationRequest:
    """A ``/v1/chat/completions`` (``chat``) or ``/v1/completions`` body, checked."""
    if not isinstance(body, Mapping):
        raise ApiError(400, "the request body must be a JSON object")
    allowed = CHAT_KEYS if chat else COMPLETION_KEYS
    extra = sorted(set(body) - allowed)
    if extra:
        raise ApiError(400, f"unknown field {extra[0]!r}", param=extra[0])
    _unsupported(body)
    if chat:
        query: Query = _messages(body.get("messages"))
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise ApiError(400, "prompt must be a non-empty string", param="prompt")
        query = prompt
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, "model must be a string", param="model")
    key = "max_completion_tokens" if chat and "max_completion_tokens" in body else "max_tokens"
    max_tokens = _integer(body, key, 1)
    stop = body.get("stop")
    stops: tuple[str, ...] = ()
    if isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = tuple(stop)
    elif stop is not None:
        raise ApiError(400, "stop must be a string or a list of strings", param="stop")
    if len(stops) > MAX_STOP or any(not s for s in stops):
        raise ApiError(400, f"stop takes up to {MAX_STOP} non-empty strings", param="stop")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "stream must be true or false", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, Mapping):
        raise ApiError(400, "stream_options must be an object", param="stream_options")
    steering = body.get("steering")
    return GenerationRequest(
        chat=chat,
        query=query,
        model=model,
        max_tokens=max_tokens if max_tokens is not None else DEFAULT_MAX_TOKENS,
        temperature=_number(body, "temperature", 0.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 1e-9, 1.0),
        seed=_integer(body, "seed", 0, 2**63 - 1),
        stop=stops,
        stream=stream,
        include_usage=bool(options.get("include_usage", False)),
        steering=None if steering is None else parse_steering(steering),
    )


# -- responses ----------------------------------------------------------------------------------


def new_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(
    chat: bool, rid: str, model: str, text: str, reason: str, used: Mapping[str, int],
    steering: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:  # fmt: skip
    """The whole (non-streamed) response."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": reason, "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {
        "id": rid,
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": dict(used),
        "steering": list(steering),
    }


def chunk_body(
    chat: bool, rid: str, model: str, text: str | None, reason: str | None, *, first: bool = False
) -> dict[str, Any]:
    """One streamed chunk: new text, or (``reason``) the end."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": reason, "logprobs": None}
    if chat:
        delta: dict[str, Any] = {}
        if first:
            delta["role"] = "assistant"
        if text:
            delta["content"] = text
        choice["delta"] = delta
    else:
        choice["text"] = text or ""
    return {
        "id": rid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
    }
