"""Batched, KV-cached text generation with an optional delta.

``generate_text`` formats each query with the chat template, pads on the left, runs
``model.generate`` in batches (greedy by default) and returns the decoded completions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from unisteer.data.chat import has_chat_template, prompt_text
from unisteer.delta import Delta
from unisteer.positions import Multiplier, Positions
from unisteer.steer import steer


def generate_text(
    model: Any,
    tokenizer: Any,
    queries: Sequence[str],
    *,
    delta: Delta | None = None,
    m: Multiplier = 1.0,
    positions: Positions = "all",
    max_new_tokens: int = 128,
    batch_size: int = 8,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    system_prompt: str | None = None,
    progress: bool = False,
) -> list[str]:
    """Completions for ``queries``; greedy when ``temperature == 0``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    texts = [prompt_text(tokenizer, q, system_prompt) for q in queries]
    out: list[str] = []
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc="generating", disable=not progress, unit="batch"):
        chunk = texts[start : start + batch_size]
        encoded = [
            tokenizer(t, add_special_tokens=not has_chat_template(tokenizer))["input_ids"]
            for t in chunk
        ]
        width = max(len(e) for e in encoded)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, e in enumerate(encoded):
            ids[row, width - len(e) :] = torch.tensor(e, dtype=torch.long)
            mask[row, width - len(e) :] = 1
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p}
            if temperature > 0
            else {"do_sample": False}
        )
        torch.manual_seed(seed + start)
        with torch.no_grad():
            if delta is None:
                gen = model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=pad_id,
                    **sampling,
                )
            else:
                with steer(model, delta, m=m, positions=positions):
                    gen = model.generate(
                        input_ids=ids,
                        attention_mask=mask,
                        max_new_tokens=max_new_tokens,
                        pad_token_id=pad_id,
                        **sampling,
                    )
        for row in range(len(chunk)):
            text = tokenizer.decode(gen[row, width:], skip_special_tokens=True)
            out.append(str(text).strip())
    return out
