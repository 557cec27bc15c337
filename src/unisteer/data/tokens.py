"""Token ids with the exact prompt / completion boundary, and padding into batches: the one
home of encode-and-collate for the sweep, the trainer and the objectives.

A query is formatted with the tokenizer's chat template when it has one (the user turn plus
the generation prompt), else used as plain text. The prompt and the completion are tokenised
separately and concatenated, so the boundary is exact: tokens ``[0, prompt_length)`` are the
prompt, ``[prompt_length, completion_end)`` the completion, and anything after it the
end-of-turn suffix the template appends (e.g. ``<|im_end|>\\n``), which losses may include.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from unisteer.data.chat import has_chat_template, messages, prompt_text
from unisteer.data.conversation import Query
from unisteer.data.pairs import PairSet, PolarityPair
from unisteer.errors import DataError

PaddingSide = Literal["left", "right"]


@dataclass(frozen=True)
class Encoded:
    """One tokenised (query, completion) sequence."""

    input_ids: tuple[int, ...]
    prompt_length: int
    completion_end: int  # exclusive; the suffix (if kept) runs from here to the end

    @property
    def completion_ids(self) -> tuple[int, ...]:
        return self.input_ids[self.prompt_length : self.completion_end]

    @property
    def suffix_ids(self) -> tuple[int, ...]:
        return self.input_ids[self.completion_end :]


def _ids(tokenizer: Any, text: str, add_special_tokens: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


def _template_parts(
    tokenizer: Any, query: Query, completion: str, system_prompt: str | None
) -> tuple[str, str, str]:
    """(prompt text, completion text, suffix text) as the chat template renders them."""
    prompt = prompt_text(tokenizer, query, system_prompt)
    full = str(
        tokenizer.apply_chat_template(
            [*messages(query, system_prompt), {"role": "assistant", "content": completion}],
            tokenize=False,
        )
    )
    if not full.startswith(prompt):
        raise DataError(
            "the chat template renders the conversation without the generation prompt as a "
            "prefix, so the prompt/completion boundary is ambiguous; use plain text (chat=False)"
        )
    rest = full[len(prompt) :]
    shown = completion if completion in rest else completion.strip()
    at = rest.find(shown)
    if at < 0:
        raise DataError("the chat template does not render the completion text verbatim")
    # Text the template puts before the answer belongs to the prompt the model is given.
    return prompt + rest[:at], shown, rest[at + len(shown) :]


def encode(
    tokenizer: Any,
    query: Query,
    completion: str,
    *,
    system_prompt: str | None = None,
    include_suffix: bool = False,
    chat: bool | None = None,
) -> Encoded:
    """Token ids of prompt + completion (+ the end-of-turn suffix when ``include_suffix``).

    ``chat=None`` uses the chat template when the tokenizer has one. Without a template the
    prompt is the query tokenised with the tokenizer's special tokens (BOS if it adds one),
    and the suffix is the EOS token.
    """
    use_chat = has_chat_template(tokenizer) if chat is None else chat
    if use_chat:
        prompt, shown, suffix = _template_parts(tokenizer, query, completion, system_prompt)
        prompt_ids = _ids(tokenizer, prompt, add_special_tokens=False)
        completion_ids = _ids(tokenizer, shown, add_special_tokens=False)
        suffix_ids = _ids(tokenizer, suffix, add_special_tokens=False) if suffix else []
    else:
        if system_prompt:
            raise DataError("a system prompt needs a chat template; this tokenizer has none")
        if not isinstance(query, str):
            raise DataError(
                "a query that is a conversation needs a chat template; this tokenizer has none"
            )
        prompt_ids = _ids(tokenizer, query, add_special_tokens=True)
        completion_ids = _ids(tokenizer, completion, add_special_tokens=False)
        eos = getattr(tokenizer, "eos_token_id", None)
        suffix_ids = [eos] if eos is not None else []
    if not completion_ids:
        raise DataError(f"the completion {completion!r} tokenises to nothing")
    ids = prompt_ids + completion_ids + (suffix_ids if include_suffix else [])
    n_prompt = len(prompt_ids)
    return Encoded(tuple(ids), n_prompt, n_prompt + len(completion_ids))


def encode_pair(tokenizer: Any, pair: PolarityPair, **kwargs: Any) -> tuple[Encoded, Encoded]:
    """The positive and the negative sequence of a pair; errors name the pair's file, line
    and id."""
    out = []
    for side in ("positive", "negative"):
        try:
            out.append(encode(tokenizer, pair.query, getattr(pair, side), **kwargs))
        except DataError as e:
            raise DataError(str(pair.problem(f"field {side!r}: {e}"))) from None
    return out[0], out[1]


@dataclass(frozen=True)
class Batch:
    """Padded sequences. ``prompt_lengths`` are columns: with left padding they include it."""

    input_ids: Tensor  # [B, T] long
    attention_mask: Tensor  # [B, T] long
    completion_mask: Tensor  # [B, T] bool: completion tokens (and the suffix when kept)
    prompt_lengths: Tensor  # [B] long: first completion column of each row
    padding_side: PaddingSide


def collate(
    encoded: Sequence[Encoded],
    pad_token_id: int,
    *,
    padding_side: PaddingSide = "right",
    include_suffix: bool = True,
) -> Batch:
    """Pad sequences into one batch. Right padding (the default) is what scoring uses.

    ``include_suffix`` marks the suffix tokens (when they were encoded) in
    ``completion_mask``.
    """
    if not encoded:
        raise ValueError("cannot collate an empty list")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    width = max(len(e.input_ids) for e in encoded)
    n = len(encoded)
    ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    completion = torch.zeros((n, width), dtype=torch.bool)
    prompt_lengths = torch.zeros(n, dtype=torch.long)
    for row, e in enumerate(encoded):
        offset = width - len(e.input_ids) if padding_side == "left" else 0
        ids[row, offset : offset + len(e.input_ids)] = torch.tensor(e.input_ids)
        mask[row, offset : offset + len(e.input_ids)] = 1
        end = len(e.input_ids) if include_suffix else e.completion_end
        completion[row, offset + e.prompt_length : offset + end] = True
        prompt_lengths[row] = offset + e.prompt_length
    return Batch(ids, mask, completion, prompt_lengths, padding_side)


def pad_id(tokenizer: Any) -> int:
    """The tokenizer's pad id, else its EOS id (padding is masked out either way)."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int | np.integer) and not isinstance(value, bool):
            return int(value)
    return 0


def left_padded(rows: Sequence[Sequence[int]], pad: int) -> tuple[Tensor, Tensor]:
    """``(input_ids, attention_mask)`` of token rows padded on the left to the longest, the
    layout generation continues from."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(list(r), dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids, mask


def encode_pairs(
    tokenizer: Any,
    pairs: Sequence[PolarityPair],
    *,
    include_suffix: bool = False,
    system_prompt: str | None = None,
    max_tokens: int | None = None,
) -> list[tuple[Encoded, Encoded]]:
    """:func:`encode_pair` for every pair: what the sweep, the trainer and DiffMean tokenise.

    ``max_tokens`` (the model's context window, see
    :func:`unisteer.model.config.context_length`) bounds each sequence: a longer one is
    refused with the pair's file, line and id before anything is allocated for it (to skip
    such pairs instead, filter them first with :func:`within_limit`)."""
    out = []
    for p in pairs:
        enc = encode_pair(tokenizer, p, include_suffix=include_suffix, system_prompt=system_prompt)
        if max_tokens is not None and (message := _too_long(enc, max_tokens)) is not None:
            raise DataError(f"{p.problem(message)}; shorten or drop the pair")
        out.append(enc)
    return out


def _too_long(enc: tuple[Encoded, Encoded], max_tokens: int) -> str | None:
    longest = max(len(e.input_ids) for e in enc)
    if longest <= max_tokens:
        return None
    return f"prompt and completion are {longest} tokens, more than the limit of {max_tokens}"


def within_limit(
    tokenizer: Any,
    pairs: PairSet,
    max_tokens: int | None,
    *,
    strict: bool = True,
    include_suffix: bool = False,
    system_prompt: str | None = None,
) -> PairSet:
    """``pairs`` whose two sequences (prompt + completion, as :func:`encode_pairs` builds them)
    are at most ``max_tokens`` tokens: the bound the model's context window (or a user's
    ``max_tokens``) puts on every pass, see :func:`unisteer.model.config.token_limit`.

    Strict (the default), the first longer pair raises :class:`DataError` naming its file and
    line; with ``strict=False`` longer pairs are dropped and each is recorded as a
    :class:`~unisteer.data.problems.Problem` in the returned set's ``problems``."""
    if max_tokens is None:
        return pairs
    kept, problems = [], list(pairs.problems)
    for p in pairs:
        enc = encode_pair(tokenizer, p, include_suffix=include_suffix, system_prompt=system_prompt)
        message = _too_long(enc, max_tokens)
        if message is None:
            kept.append(p)
        elif strict:
            raise DataError(
                f"{p.problem(message)}; shorten or drop the pair, or skip such pairs "
                "(--lenient, or lenient = true in [data])"
            )
        else:
            problems.append(p.problem(f"{message}; skipped"))
    return PairSet(kept, name=pairs.name, problems=problems)


def pair_batch(
    encoded: Sequence[tuple[Encoded, Encoded]], indices: Sequence[int], pad: int
) -> Batch:
    """The pairs ``indices`` of ``encoded`` as rows ``[p0+, p0-, p1+, p1-, ...]``, right-padded
    (the layout the sweep, the trainer, DiffMean and the replay engine share)."""
    return collate([e for i in indices for e in encoded[i]], pad, padding_side="right")
