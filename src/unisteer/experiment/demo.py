"""``unisteer demo``: steer the default model toward a concept and show the difference.

A DiffMean vector (:func:`unisteer.training.objectives.diffmean.diffmean`) is computed from a
handful of polarity pairs written for this demo: one neutral query, answered by a sentence about
the sea (A_p) or about everyday matters (A_n), at the residual output of the middle block. Its
multiplier is ``strength`` in DiffMean's natural unit ‖h‖/‖v‖ (``meta["unit"]``, ‖h‖ the median
residual norm there), so the push m·v has norm ``strength`` × the typical residual norm. A chat
prompt is then completed greedily, unsteered (m = 0) and steered, as one batch of
:func:`unisteer.generation.generate`.
"""

from __future__ import annotations

import shutil
import textwrap
from dataclasses import dataclass
from typing import Any

from unisteer.core.delta import Delta
from unisteer.core.sites import middle_layer
from unisteer.data.pairs import PolarityPair
from unisteer.generation import generate
from unisteer.model import DEFAULT_MODEL
from unisteer.model.load import load_model
from unisteer.training.objectives.diffmean import diffmean

#: The query every demo pair shares: it asks for nothing in particular.
QUERY = "Write a sentence."
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
    strength: float | None = None  # m·‖v‖ as a fraction of the median residual norm


def demo_pairs() -> list[PolarityPair]:
    """The demo's polarity pairs: :data:`QUERY` answered about the sea (A_p) or not (A_n)."""
    return [
        PolarityPair(QUERY, sea, everyday, id=f"sea-{i}")
        for i, (sea, everyday) in enumerate(zip(SEA, EVERYDAY, strict=True))
    ]


def diffmean_demo_vector(model: Any, tokenizer: Any, layer: int) -> Delta:
    """The DiffMean vector of :func:`demo_pairs` at ``layer`` (its unit in ``meta["unit"]``)."""
    return diffmean(model, tokenizer, demo_pairs(), layer=layer)


def run_demo(
    model_name: str = DEFAULT_MODEL,
    prompt: str = "Tell me about your plans for the weekend.",
    strength: float = 0.6,
    max_new_tokens: int = 48,
) -> DemoResult:
    """Complete ``prompt`` unsteered and steered toward the sea at ``strength`` units."""
    model, tokenizer = load_model(model_name)
    layer = middle_layer(model)
    delta = diffmean_demo_vector(model, tokenizer, layer)
    m = strength * float(delta.meta["unit"])
    plain, steered = generate(
        model,
        tokenizer,
        [prompt, prompt],
        delta=delta,
        m=[0.0, m],
        max_new_tokens=max_new_tokens,
        batch_size=2,
    )
    return DemoResult(prompt, layer, m, plain, steered, strength)


def format_side_by_side(result: DemoResult, width: int | None = None) -> str:
    total = width or min(shutil.get_terminal_size((100, 20)).columns, 120)
    col = max(30, (total - 3) // 2)
    left = textwrap.wrap(result.unsteered, col) or [""]
    right = textwrap.wrap(result.steered, col) or [""]
    head_r = f"steered toward 'the sea' (m = {result.multiplier:.2f})"
    scale = (
        f", m·‖v‖ = {result.strength:g} × the median residual norm"
        if result.strength is not None
        else ""
    )
    lines = [
        f"prompt: {result.prompt}",
        f"vector: v = DiffMean at the output of block {result.layer}{scale}",
        "",
        f"{'unsteered':<{col}} | {head_r}",
        f"{'-' * col}-+-{'-' * col}",
    ]
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else ""
        b = right[i] if i < len(right) else ""
        lines.append(f"{a:<{col}} | {b}")
    return "\n".join(lines)
