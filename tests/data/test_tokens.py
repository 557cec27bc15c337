"""Golden token ids and exact prompt/completion boundaries, and the collator."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unisteer.data import PolarityPair, collate, encode, encode_pair
from unisteer.errors import DataError

from tiny_tokenizers import BOS_TEMPLATE, CHATML, WORDS, ids, word_tokenizer


def test_chat_template_without_bos_or_system() -> None:
    tok = word_tokenizer(chat_template=CHATML)
    e = encode(tok, "hello world", "good day")
    prompt = ids(
        "<|im_start|>", "user", "hello", "world", "<|im_end|>", "<|im_start|>", "assistant"
    )
    assert list(e.input_ids) == prompt + ids("good", "day")
    assert e.prompt_length == 7 and e.completion_end == 9 and e.suffix_ids == ()
    with_suffix = encode(tok, "hello world", "good day", include_suffix=True)
    assert list(with_suffix.input_ids) == prompt + ids("good", "day", "<|im_end|>")
    assert with_suffix.completion_ids == tuple(ids("good", "day"))
    assert with_suffix.suffix_ids == tuple(ids("<|im_end|>"))


def test_chat_template_with_system_prompt() -> None:
    tok = word_tokenizer(chat_template=CHATML)
    e = encode(tok, "hello", "yes", system_prompt="you are helpful")
    assert list(e.input_ids) == ids(
        "<|im_start|>",
        "system",
        "you",
        "are",
        "helpful",
        "<|im_end|>",
        "<|im_start|>",
        "user",
        "hello",
        "<|im_end|>",
        "<|im_start|>",
        "assistant",
        "yes",
    )
    assert e.prompt_length == 12


def test_template_that_writes_bos_gets_exactly_one() -> None:
    tok = word_tokenizer(bos=True, chat_template=BOS_TEMPLATE)
    e = encode(tok, "hello", "  good day  ", include_suffix=True)  # the template trims content
    assert list(e.input_ids) == ids(
        "<s>",
        "<|im_start|>",
        "user",
        "hello",
        "<|im_end|>",
        "<|im_start|>",
        "assistant",
        "good",
        "day",
        "<|im_end|>",
    )
    assert e.completion_ids == tuple(ids("good", "day"))


def test_plain_text_with_and_without_bos() -> None:
    with_bos = encode(word_tokenizer(bos=True), "the sea is", "blue", include_suffix=True)
    assert list(with_bos.input_ids) == ids("<s>", "the", "sea", "is", "blue", "</s>")
    assert (with_bos.prompt_length, with_bos.completion_end) == (4, 5)
    without = encode(word_tokenizer(), "the sea is", "blue")
    assert list(without.input_ids) == ids("the", "sea", "is", "blue")
    assert without.prompt_length == 3
    with pytest.raises(DataError, match="system prompt needs a chat template"):
        encode(word_tokenizer(), "the sea", "blue", system_prompt="you are helpful")


def test_completion_that_tokenises_to_nothing_is_an_error() -> None:
    with pytest.raises(DataError, match="tokenises to nothing"):
        encode(word_tokenizer(), "hello", "   ")
    pair = PolarityPair("hello", "yes", "\x07", id="p1", meta={"source": "f.jsonl", "line": 4})
    with pytest.raises(DataError, match=r"f\.jsonl:4: pair 'p1': field 'negative'.*nothing"):
        encode_pair(word_tokenizer(), pair)


def test_collate_right_and_left() -> None:
    tok = word_tokenizer(bos=True)
    a = encode(tok, "hello", "good day", include_suffix=True)  # 1 + 1 + 2 + 1 = 5 tokens
    b = encode(tok, "the sea is", "blue")  # 1 + 3 + 1 = 5... without suffix: 5 tokens
    c = encode(tok, "hello", "yes")  # 3 tokens
    right = collate([a, b, c], pad_token_id=0)
    assert right.input_ids.tolist() == [list(a.input_ids), list(b.input_ids), [*c.input_ids, 0, 0]]
    assert right.attention_mask.tolist() == [[1] * 5, [1] * 5, [1, 1, 1, 0, 0]]
    assert right.prompt_lengths.tolist() == [2, 4, 2]
    assert right.completion_mask.tolist() == [
        [False, False, True, True, True],
        [False, False, False, False, True],
        [False, False, True, False, False],
    ]
    no_suffix = collate([a], pad_token_id=0, include_suffix=False)
    assert no_suffix.completion_mask.tolist() == [[False, False, True, True, False]]
    left = collate([a, c], pad_token_id=0, padding_side="left")
    assert left.input_ids[1].tolist() == [0, 0, *c.input_ids]
    assert left.prompt_lengths.tolist() == [2, 4]
    assert left.completion_mask[1].tolist() == [False, False, False, False, True]
    # The completion tokens sit where the mask says, whatever the padding.
    for batch in (right, left):
        for row, e in enumerate((a, c) if batch is left else (a, b, c)):
            got = batch.input_ids[row][batch.completion_mask[row]].tolist()
            assert got[: len(e.completion_ids)] == list(e.completion_ids)


words = st.lists(
    st.sampled_from([w for w in WORDS if w.strip() and w not in ".,!?"]), min_size=1, max_size=6
)


@settings(max_examples=60, deadline=None)
@given(query=words, first=words, second=words, chat=st.booleans(), bos=st.booleans())
def test_boundary_is_exact_for_any_text(
    query: list[str], first: list[str], second: list[str], chat: bool, bos: bool
) -> None:
    tok = word_tokenizer(bos=bos, chat_template=CHATML if chat else None)
    q, c1, c2 = " ".join(query), " ".join(first), " ".join(second)
    e1 = encode(tok, q, c1, include_suffix=True)
    e2 = encode(tok, q, c2, include_suffix=True)
    # The same query gives the same prompt tokens, whatever the completion.
    assert e1.input_ids[: e1.prompt_length] == e2.input_ids[: e2.prompt_length]
    assert tok.decode(list(e1.completion_ids)) == c1
    assert tok.decode(list(e2.completion_ids)) == c2
    batch = collate([e1, e2], pad_token_id=0)
    assert int(batch.completion_mask.sum()) == sum(
        len(e.input_ids) - e.prompt_length for e in (e1, e2)
    )
    assert torch.equal(batch.prompt_lengths, torch.tensor([e1.prompt_length, e2.prompt_length]))


@pytest.mark.slow
def test_default_model_tokenizer_boundary() -> None:
    import unisteer

    _, tok = unisteer.load_model()
    e = encode(tok, "What colour is the sea?", "The sea is blue.", include_suffix=True)
    prompt = tok.decode(list(e.input_ids[: e.prompt_length]))
    assert prompt.startswith("<|im_start|>system\n")  # SmolLM2's template adds its own system
    assert prompt.endswith(
        "<|im_start|>user\nWhat colour is the sea?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tok.decode(list(e.completion_ids)) == "The sea is blue."
    assert tok.decode(list(e.suffix_ids)) == "<|im_end|>\n"
    custom = encode(tok, "Hi", "Hello.", system_prompt="Be brief.")
    assert "Be brief." in tok.decode(list(custom.input_ids)) and "SmolLM" not in tok.decode(
        list(custom.input_ids)
    )
