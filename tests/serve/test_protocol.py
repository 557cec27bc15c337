"""The OpenAI request parser: any JSON value is a request or an ApiError that names its field,
never another exception; the fields are read as the API documents them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unisteer.serve.protocol import ApiError, parse_request, parse_steering


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    _containers,
    max_leaves=12,
)
KEYS = ["model", "messages", "prompt", "max_tokens", "temperature", "top_p", "seed", "stop",
        "stream", "stream_options", "n", "steering"]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6), st.booleans())
def test_any_body_is_a_request_or_a_400(body: dict[str, Any], chat: bool) -> None:
    try:
        req = parse_request(body, chat=chat)
    except ApiError as e:
        assert e.status == 400 and e.message
        assert e.body()["error"]["type"] == "invalid_request_error"
        return
    assert req.max_tokens >= 1 and 0 <= req.temperature <= 2


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_steering_value_is_entries_or_a_400(value: Any) -> None:
    try:
        entries = parse_steering(value)
    except ApiError as e:
        assert e.status == 400 and e.param is not None and e.param.startswith("steering")
        return
    for s in entries:
        assert s.positions in ("all", "prompt", "completion") and s.m == s.m


def test_a_chat_body_as_the_client_sends_it() -> None:
    req = parse_request(
        {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
         "max_completion_tokens": 7, "stop": "\n", "stream": True,
         "stream_options": {"include_usage": True},
         "steering": {"delta": "d", "m": 2, "positions": "completion"}},
        chat=True,
    )  # fmt: skip
    assert req.query == (("system", "Be brief."), ("user", "hi"))
    assert (req.max_tokens, req.stop, req.stream, req.include_usage) == (7, ("\n",), True, True)
    assert req.steering is not None and req.steering[0].m == 2.0
    one = parse_request({"messages": [{"role": "user", "content": "hi"}]}, chat=True)
    assert one.query == "hi" and one.steering is None and one.max_tokens == 256


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}], "logprobs": True}, "logprobs"),
        (
            {"messages": [{"role": "user", "content": "x"}], "presence_penalty": 1},
            "presence_penalty",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "stop": ["a"] * 5}, "stop"),
        ({"messages": [{"role": "user", "content": "x"}], "seed": -1}, "seed"),
        ({"messages": [{"role": "user", "content": "x"}], "top_p": 0}, "top_p"),
    ],
)
def test_what_cannot_be_honoured_is_refused(body: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as e:
        parse_request(body, chat=True)
    assert e.value.param == param
