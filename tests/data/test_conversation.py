"""Multi-turn pairs: a query may be a conversation (chat messages ending with a user turn)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unisteer.data import PairSet, PolarityPair, encode_pair, load_pairs
from unisteer.data.conversation import parse_query, query_json, query_text
from unisteer.data.readers import read_jsonl
from unisteer.data.tokens import encode
from unisteer.errors import DataError
from unisteer.generation import generate
from unisteer.scoring.sweep import sweep

from conftest import make_delta
from tiny_models import tiny_model
from tiny_tokenizers import CHATML, word_tokenizer

TALK = [
    {"role": "user", "content": "hello you"},
    {"role": "assistant", "content": "hello . good day"},
    {"role": "user", "content": "is the sea blue ?"},
]


def test_a_conversation_is_normalised_and_given_back() -> None:
    q = parse_query(TALK)
    assert q == (
        ("user", "hello you"),
        ("assistant", "hello . good day"),
        ("user", "is the sea blue ?"),
    )
    assert query_json(q) == TALK and parse_query(query_json(q)) == q
    assert query_text(q).splitlines()[-1] == "user: is the sea blue ?"
    assert parse_query("plain") == "plain" and query_text("plain") == "plain"
    pair = PolarityPair(TALK, "yes .", "no .", id="t")  # type: ignore[arg-type]
    assert pair.query == q and hash(pair) == hash(PolarityPair(q, "yes .", "no .", id="t"))
    assert pair.to_dict()["query"] == TALK


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ([], "at least one message"),
        (
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
            "end with a user",
        ),
        ([{"role": "bot", "content": "a"}], r"message 0: role must be one of"),
        ([{"role": "user", "content": "  "}], r"message 0: content must be a non-empty"),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "system", "content": "s"},
                {"role": "user", "content": "b"},
            ],
            "system message can only come first",
        ),
        ([{"role": "user", "content": "a", "name": "x"}], "unknown key 'name'"),
        ([42], r"message 0: expected"),
        (42, "a query must be a string or a list of messages, got int"),
    ],
)
def test_a_bad_conversation_says_which_message(query: Any, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_query(query)
    with pytest.raises(DataError, match=rf"pair 'x': query: .*{message}"):
        PolarityPair(query, "a", "b", id="x")


def test_the_jsonl_reader_names_the_line_of_a_bad_conversation(tmp_path: Path) -> None:
    rows = [
        {"query": TALK, "positive": "yes .", "negative": "no ."},
        {"query": TALK[:2], "positive": "yes .", "negative": "no ."},
    ]
    path = tmp_path / "talk.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"talk\.jsonl:2: .*query.*end with a user"):
        read_jsonl(path)
    lenient = read_jsonl(path, strict=False)
    assert len(lenient) == 1 and lenient[0].query == parse_query(TALK)
    back = PairSet(list(lenient)).to_jsonl(tmp_path / "back.jsonl")
    assert read_jsonl(back)[0].query == lenient[0].query


message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "user", "assistant", "tool"]),
        "content": st.text(max_size=5),
    }
)


@settings(max_examples=200, deadline=None)
@given(st.lists(message, max_size=5))
def test_parsing_either_refuses_clearly_or_round_trips(messages: list[dict[str, str]]) -> None:
    try:
        q = parse_query(messages)
    except DataError:
        return
    assert isinstance(q, tuple) and q[-1][0] == "user"
    assert query_json(q) == messages and parse_query(query_json(q)) == q


def test_the_prompt_is_the_whole_conversation_as_the_template_renders_it() -> None:
    tok = word_tokenizer(chat_template=CHATML)
    enc = encode(tok, parse_query(TALK), "yes .")
    rendered = tok.apply_chat_template(TALK, add_generation_prompt=True, tokenize=False)
    assert enc.input_ids[: enc.prompt_length] == tuple(
        tok(rendered, add_special_tokens=False)["input_ids"]
    )
    assert tok.decode(enc.completion_ids) == "yes ."
    with pytest.raises(DataError, match="needs a chat template"):
        encode(word_tokenizer(), parse_query(TALK), "yes .")
    with pytest.raises(DataError, match="own system message"):
        encode(
            tok,
            parse_query([{"role": "system", "content": "you are"}, *TALK]),
            "yes .",
            system_prompt="be good",
        )


def test_sweeps_and_generation_take_conversations() -> None:
    tok = word_tokenizer(chat_template=CHATML)
    model = tiny_model("llama")
    delta = make_delta(model, "vector", layer=1)
    pairs = [
        PolarityPair(TALK, "yes . the sea is blue", "no .", id="a"),  # type: ignore[arg-type]
        PolarityPair(TALK[:1], "good day", "hello", id="b"),  # type: ignore[arg-type]
        PolarityPair("hello you", "yes", "no", id="c"),
    ]
    ms = [-1.0, 0.0, 2.0]
    fast = sweep(model, tok, pairs, delta, ms, progress=False)
    naive = sweep(model, tok, pairs, delta, ms, progress=False, method="naive")
    cols = ["loss_pos", "loss_neg", "pref_odds"]
    assert fast.meta["method"] != "naive"
    assert np.abs(fast.table[cols].to_numpy() - naive.table[cols].to_numpy()).max() <= 1e-4
    pos, _ = encode_pair(tok, pairs[0])
    assert pos.prompt_length > 3 * len(TALK)  # every turn is in the prompt
    texts = generate(model, tok, [pairs[0].query, "hello you"], max_new_tokens=3)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_the_shipped_multiturn_set() -> None:
    pairs = load_pairs("default:pirate_multiturn")
    assert len(pairs) == 64 and {p.meta["split"] for p in pairs} == {"test"}
    for p in pairs:
        assert isinstance(p.query, tuple) and p.query[-1][0] == "user" and len(p.query) >= 3
        assert p.meta["turns"] == len(p.query)
    single = load_pairs("default:pirate")
    assert not {p.key for p in pairs} & {p.key for p in single}
    assert len(load_pairs("default")) == 4 * 160  # "default" is the four concepts only
