"""A judge that runs a local Hugging Face causal LM on the rating prompts.

The model answers each prompt (with its chat template when it has one) by greedy decoding,
batched; the answer is parsed for ``Rating: [[N]]`` like any LLM judge's. Answers without a
valid rating score 0 and are counted in ``parse_failures``.

A credible judge needs a capable instruct model (several billion parameters): a 135M model
mostly fails to follow the format, and its ratings carry little signal. Record which model
judged (``name``), and never compare its numbers with another judge's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from unisteer.evaluate.judges.base import PromptJudge
from unisteer.evaluate.judges.prompts import templates_hash
from unisteer.generation import generate


class LocalJudge(PromptJudge):
    """LLM judge from a local ``model`` and ``tokenizer`` (greedy, ``max_new_tokens`` per answer).

    ``name`` defaults to ``local:<name_or_path of the model>``.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_new_tokens: int = 256,
        batch_size: int = 8,
        name: str | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        config = getattr(model, "config", None)
        label = getattr(config, "name_or_path", "") or type(model).__name__
        self.name = name or f"local:{label}"

    def provenance(self) -> dict[str, Any]:
        return {
            **super().provenance(),
            "max_new_tokens": self.max_new_tokens,
            "decoding": "greedy",
            "templates": templates_hash(),
        }

    def complete(self, prompts: Sequence[str], *, progress: bool = False) -> list[str]:
        return generate(
            self.model,
            self.tokenizer,
            list(prompts),
            max_new_tokens=self.max_new_tokens,
            temperature=0.0,
            batch_size=self.batch_size,
            progress=progress,
        )
