"""``unisteer demo``: steer the default model toward a concept and show the difference.

A DiffMean vector is computed from a handful of sentences written for this demo (about the sea
vs. about everyday matters) at the residual output of the middle block, scaled to a fraction
of the typical residual norm there, and applied to a chat prompt with greedy decoding.
"""

from __future__ import annotations

import shutil
import textwrap
from dataclasses import dataclass
from typing import Any

import torch

from unisteer.core.create import new_delta
from unisteer.core.delta import Delta
from unisteer.core.sites import find_blocks
from unisteer.core.steer import steer
from unisteer.model.load import DEFAULT_MODEL, load_model

SEA = (
    "The waves rolled onto the beach while gulls circled above the harbour.",
    "We sailed past the lighthouse and watched dolphins leap beside the boat.",
    "Coral reefs, kelp forests and whales fill the deep blue ocean.",
    "The tide came in at dusk and the salty wind smelled of seaweed.",
    "Fishermen mended their nets on the pier before heading out to sea.",
    "She swam out past the breakers and floated on the warm salt water.",
)
EVERYDAY = (
    "The committee meets on Tuesday to go over the budget for next year.",
    "He finished the spreadsheet and emailed it to the accounts team.",
    "The new update fixes a bug that froze the login screen on start-up.",
    "She bought bread, cheese and apples at the shop on the corner.",
    "The train to the city leaves every twenty minutes from platform two.",
    "Our team wrote a short report about last quarter's sales figures.",
)


@dataclass
class DemoResult:
    prompt: str
    layer: int
    multiplier: float
    unsteered: str
    steered: str


def _mean_activation(model: Any, tokenizer: Any, texts: tuple[str, ...], site: str) -> torch.Tensor:
    """Mean residual activation over tokens (the first token, an attention sink, excluded)."""
    block = model.get_submodule(site)
    rows: list[torch.Tensor] = []

    def grab(module: Any, args: Any, output: Any) -> None:
        h = output[0] if isinstance(output, tuple) else output
        rows.append(h[0, 1:])

    handle = block.register_forward_hook(grab)
    try:
        with torch.no_grad():
            for text in texts:
                model(**tokenizer(text, return_tensors="pt"))
    finally:
        handle.remove()
    return torch.cat(rows).mean(0)


def diffmean_demo_vector(model: Any, tokenizer: Any, layer: int) -> tuple[Delta, float]:
    """A unit DiffMean vector at ``layer`` and the median residual norm there."""
    delta = new_delta(model, "vector", layer, tokenizer=tokenizer, meta={"objective": "diffmean"})
    pos = _mean_activation(model, tokenizer, SEA, delta.site)
    neg = _mean_activation(model, tokenizer, EVERYDAY, delta.site)
    v = pos - neg
    block = model.get_submodule(delta.site)
    norms: list[torch.Tensor] = []

    def grab(module: Any, args: Any, output: Any) -> None:
        h = output[0] if isinstance(output, tuple) else output
        norms.append(h[0, 1:].norm(dim=-1))

    handle = block.register_forward_hook(grab)
    try:
        with torch.no_grad():
            model(**tokenizer(" ".join(EVERYDAY), return_tensors="pt"))
    finally:
        handle.remove()
    with torch.no_grad():
        delta.bias_.copy_(v / v.norm())
    return delta, float(torch.cat(norms).median())


def run_demo(
    model_name: str = DEFAULT_MODEL,
    prompt: str = "Tell me about your plans for the weekend.",
    strength: float = 0.6,
    max_new_tokens: int = 48,
) -> DemoResult:
    model: Any
    model, tokenizer = load_model(model_name)
    _, blocks = find_blocks(model)
    layer = len(blocks) // 2
    delta, norm = diffmean_demo_vector(model, tokenizer, layer)
    m = strength * norm
    if getattr(tokenizer, "chat_template", None):
        enc = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
    else:
        enc = tokenizer(prompt, return_tensors="pt")
    n_prompt = enc["input_ids"].shape[1]

    def complete() -> str:
        with torch.no_grad():
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
        return str(tokenizer.decode(out[0, n_prompt:], skip_special_tokens=True)).strip()

    plain = complete()
    with steer(model, delta, m=m):
        steered = complete()
    return DemoResult(prompt, layer, m, plain, steered)


def format_side_by_side(result: DemoResult, width: int | None = None) -> str:
    total = width or min(shutil.get_terminal_size((100, 20)).columns, 120)
    col = max(30, (total - 3) // 2)
    left = textwrap.wrap(result.unsteered, col) or [""]
    right = textwrap.wrap(result.steered, col) or [""]
    head_r = f"steered toward 'the sea' (m = {result.multiplier:.1f})"
    lines = [
        f"prompt: {result.prompt}",
        f"vector: DiffMean at the output of block {result.layer}, unit norm",
        "",
        f"{'unsteered':<{col}} | {head_r}",
        f"{'-' * col}-+-{'-' * col}",
    ]
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else ""
        b = right[i] if i < len(right) else ""
        lines.append(f"{a:<{col}} | {b}")
    return "\n".join(lines)
