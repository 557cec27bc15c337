"""Mean per-token negative log-likelihood of a response under a (base) model.

Used by the proxy judge's fluency axis: the response is scored as the completion of the
instruction's chat-formatted prompt, so the model judges the text in context. Pass the
*unsteered* model (no ``steer`` block active), or a separate reference model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from unisteer.data.tokens import Encoded, collate, encode, pad_id
from unisteer.errors import DataError
from unisteer.model.memory import model_device
from unisteer.replay.logprob import token_logprobs


def completion_nll(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    texts: Sequence[str],
    *,
    batch_size: int = 8,
    max_tokens: int = 512,
) -> list[float]:
    """Mean NLL (nats per token) of ``texts[i]`` given ``prompts[i]``; NaN for empty texts.

    Sequences longer than ``max_tokens`` are cut at the end.
    """
    if len(prompts) != len(texts):
        raise ValueError(f"{len(prompts)} prompts but {len(texts)} texts")
    encoded: list[Encoded | None] = []
    for p, t in zip(prompts, texts, strict=True):
        if not t.strip():
            encoded.append(None)
            continue
        try:
            e = encode(tokenizer, p, t)
        except DataError:
            encoded.append(None)
            continue
        if len(e.input_ids) > max_tokens:
            cut = max(e.prompt_length + 1, max_tokens)
            e = Encoded(e.input_ids[:cut], e.prompt_length, min(e.completion_end, cut))
        encoded.append(e)
    out = [math.nan] * len(texts)
    todo = [i for i, e in enumerate(encoded) if e is not None]
    pad = pad_id(tokenizer)
    device = model_device(model)  # where the inputs go, also on a dispatched model
    for start in range(0, len(todo), batch_size):
        rows = todo[start : start + batch_size]
        batch = collate([encoded[i] for i in rows], pad, include_suffix=False)  # type: ignore[misc]
        with torch.no_grad():
            logits = model(
                input_ids=batch.input_ids.to(device),
                attention_mask=batch.attention_mask.to(device),
            ).logits
        out_device = logits.device  # the unembedding's device
        mask = batch.completion_mask[:, 1:].to(out_device)
        # Normalise only where a completion token is predicted (the vocabulary is large).
        picked = logits[:, :-1][mask].float()
        targets = batch.input_ids[:, 1:].to(out_device)[mask]
        token_logp = token_logprobs(picked, targets)
        row = torch.arange(len(rows), device=out_device)[:, None].expand_as(mask)[mask]
        sums = torch.zeros(len(rows), device=out_device, dtype=torch.float64).index_add_(
            0, row, token_logp
        )
        counts = mask.sum(1).clamp_min(1)
        for k, i in enumerate(rows):
            out[i] = float(-sums[k] / counts[k])
    return out
