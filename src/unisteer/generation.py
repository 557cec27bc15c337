"""Steered, batched, KV-cached text generation.

>>> texts = generate(model, tokenizer, ["Tell me about the sea."], delta=d, m=8.0,
...                  temperature=1.0, max_new_tokens=64, seed=0)

Each prompt is formatted with the tokenizer's chat template when it has one (else used as plain
text), the batch is padded on the left, and ``model.generate`` runs with its KV cache inside
:func:`unisteer.steer.steer` (so the multiplier reaches every prompt and generated token, or
only those ``positions`` selects). Prompts are grouped by length to waste little padding; the
output order is the input order.

Decoding is reproducible and does not depend on how prompts are batched:

* greedy (``temperature == 0``, the default) takes the argmax, as ``model.generate`` does;
* sampling (``temperature > 0``, optionally with ``top_k`` / ``top_p``) draws every row's next
  token from that row's own ``torch.Generator``, seeded from ``seed`` and the row's index (or
  given per row). The same seed gives the same text, whatever the batch size or the other
  prompts of the batch. (Floating point differences between batch shapes could in principle
  flip a near-tie; in practice the tokens match.)

No repetition penalty or other decoding default of the model's ``generation_config`` applies:
what you pass is what runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from unisteer.core.delta import Delta
from unisteer.core.fingerprint import model_fingerprint
from unisteer.core.positions import Multiplier, PositionMode
from unisteer.core.steer import steer
from unisteer.core.steering_set import Steerable
from unisteer.data.chat import has_chat_template, prompt_text
from unisteer.data.conversation import Query
from unisteer.data.tokens import left_padded, pad_id
from unisteer.errors import DataError
from unisteer.files import write_text_atomic
from unisteer.model.memory import model_device

__all__ = [
    "Generation",
    "ResponseCache",
    "RowSampler",
    "base_responder",
    "generate",
    "generate_detailed",
    "generate_text",
    "row_seed",
    "row_seeds",
]


@dataclass(frozen=True)
class Generation:
    """One completion: its text, its token ids (up to and including EOS) and how it was made."""

    text: str
    token_ids: tuple[int, ...]
    prompt_tokens: int
    finished: bool  # stopped at EOS before max_new_tokens
    seed: int


def row_seed(*parts: Any) -> int:
    """A stable 63-bit seed from JSON-serialisable parts (the same on every run and platform)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") >> 1


class RowSampler(LogitsProcessor):
    """Temperature / top-k / top-p sampling with one generator per row.

    Returns scores that are ``-inf`` everywhere except at the drawn token, so the greedy step of
    ``model.generate`` picks exactly the sampled token. Each row only ever consumes its own
    generator, which is what makes sampling independent of the batch layout.
    """

    def __init__(
        self, seeds: Sequence[int], temperature: float, top_p: float = 1.0, top_k: int | None = None
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"sampling needs temperature > 0, got {temperature}")
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.top_k = top_k

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        logits = scores.detach().to("cpu", torch.float32) / self.temperature
        if self.top_k is not None and 0 < self.top_k < logits.shape[-1]:
            kth = torch.topk(logits, self.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
            probs = torch.softmax(sorted_logits, dim=-1)
            before = torch.cumsum(probs, dim=-1) - probs  # mass of strictly better tokens
            drop_sorted = before >= self.top_p  # the first token is always kept
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            logits = logits.masked_fill(drop, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        out = torch.full_like(scores, float("-inf"))
        for row in range(scores.shape[0]):
            token = int(torch.multinomial(probs[row], 1, generator=self.generators[row]))
            out[row, token] = 0.0
        return out


def row_seeds(seed: int | Sequence[int], n: int) -> list[int]:
    """One sampling seed per prompt: ``row_seed(seed, i)`` for an int, else the ``n`` given."""
    seeds = [row_seed(seed, i) for i in range(n)] if isinstance(seed, int) else list(seed)
    if len(seeds) != n:
        raise ValueError(f"got {len(seeds)} seeds for {n} prompts")
    return seeds


def _row_multipliers(m: Multiplier | Sequence[float], n: int) -> list[float] | None:
    """One float per prompt, or None when ``m`` is one number for all."""
    if isinstance(m, Tensor):
        if m.dim() == 0:
            return None
        if m.dim() != 1:
            raise ValueError(
                "generate takes m as a float or one value per prompt; per-token multipliers "
                "depend on the padded layout: use steer() around model.generate instead"
            )
        values = [float(x) for x in m.tolist()]
    elif isinstance(m, int | float):
        return None
    else:
        values = [float(x) for x in m]
    if len(values) != n:
        raise ValueError(f"got {len(values)} multipliers for {n} prompts")
    return values


def encode_prompts(
    tokenizer: Any, prompts: Sequence[Query], chat: bool, system: str | None
) -> list[list[int]]:
    """Each prompt's token ids as generation feeds them (the chat template with its own BOS,
    or the plain text); also :mod:`unisteer.control.generate`'s."""
    out = []
    for p in prompts:
        if chat:
            text = prompt_text(tokenizer, p, system)
        elif isinstance(p, str):
            text = p
        else:
            raise DataError("a prompt that is a conversation needs the chat template (chat=True)")
        # A chat template writes its own BOS where the model wants one: add none twice.
        out.append(list(tokenizer(text, add_special_tokens=not chat)["input_ids"]))
    return out


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """The token ids that end a completion: the model's generation config's, else the
    tokenizer's."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        return set()
    return {int(e) for e in eos} if isinstance(eos, list | tuple) else {int(eos)}


def generate_detailed(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Query],
    *,
    delta: Steerable | Sequence[Delta] | None = None,
    m: Multiplier | Sequence[float] = 1.0,
    positions: PositionMode = "all",
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int | None = None,
    seed: int | Sequence[int] = 0,
    batch_size: int = 8,
    chat: bool | None = None,
    system_prompt: str | None = None,
    progress: bool = False,
) -> list[Generation]:
    """Like :func:`generate`, returning :class:`Generation` records (text, token ids, seed)."""
    n = len(prompts)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
    if positions not in ("all", "prompt", "completion"):
        raise ValueError(f"positions must be 'all', 'prompt' or 'completion', got {positions!r}")
    seeds = row_seeds(seed, n)
    per_row = _row_multipliers(m, n)
    use_chat = has_chat_template(tokenizer) if chat is None else chat
    encoded = encode_prompts(tokenizer, prompts, use_chat, system_prompt)
    empty = [i for i, e in enumerate(encoded) if not e]
    if empty:
        raise ValueError(f"prompt {empty[0]} tokenises to nothing; give it some text")
    pad = pad_id(tokenizer)
    eos = eos_ids(model, tokenizer)
    order = sorted(range(n), key=lambda i: -len(encoded[i]))
    results: list[Generation | None] = [None] * n
    # Where the inputs go: the embedding's execution device, also on a dispatched model.
    device = model_device(model) if isinstance(model, torch.nn.Module) else torch.device("cpu")
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc="generating", disable=not progress, unit="batch"):
        rows = order[start : start + batch_size]
        ids, mask = left_padded([encoded[i] for i in rows], pad)
        width = ids.shape[1]
        kwargs: dict[str, Any] = {
            "input_ids": ids.to(device),
            "attention_mask": mask.to(device),
            "max_new_tokens": max_new_tokens,
            "pad_token_id": pad,
            "do_sample": False,
            # Neutralise decoding defaults of the model's generation_config.
            "temperature": None,
            "top_p": None,
            "top_k": None,
            "repetition_penalty": None,
        }
        if temperature > 0:
            sampler = RowSampler([seeds[i] for i in rows], temperature, top_p, top_k)
            kwargs["logits_processor"] = LogitsProcessorList([sampler])
        with torch.no_grad():
            if delta is None:
                out = model.generate(**kwargs)
            else:
                row_m: Multiplier = (
                    m  # type: ignore[assignment]
                    if per_row is None
                    else torch.tensor([per_row[i] for i in rows], dtype=torch.float32)
                )
                with steer(model, delta, m=row_m, positions=positions):
                    out = model.generate(**kwargs)
        for r, i in enumerate(rows):
            new = [int(t) for t in out[r, width:].tolist()]
            cut = next((k + 1 for k, t in enumerate(new) if t in eos), None)
            kept = new if cut is None else new[:cut]
            text = str(tokenizer.decode(kept, skip_special_tokens=True)).strip()
            results[i] = Generation(text, tuple(kept), len(encoded[i]), cut is not None, seeds[i])
    return [g for g in results if g is not None]


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Query],
    *,
    delta: Steerable | Sequence[Delta] | None = None,
    m: Multiplier | Sequence[float] = 1.0,
    positions: PositionMode = "all",
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int | None = None,
    seed: int | Sequence[int] = 0,
    batch_size: int = 8,
    chat: bool | None = None,
    system_prompt: str | None = None,
    progress: bool = False,
) -> list[str]:
    """Completions of ``prompts`` (in order), optionally steered by ``delta``.

    Args:
        delta: one delta or several (all active at once); ``None`` runs the base model.
        m: the multiplier: one float for every prompt, or one per prompt (a list or ``[N]``
            tensor), e.g. to generate a whole factor grid in one batch. Ignored without a delta.
        positions: ``"all"`` (prompt and generated tokens, as AxBench), ``"prompt"`` or
            ``"completion"`` (generated tokens only).
        temperature: 0 for greedy decoding; above 0 samples (with ``top_p`` and ``top_k``).
        seed: an int (row ``i`` uses ``row_seed(seed, i)``) or one seed per prompt.
        batch_size: prompts per ``model.generate`` call; results do not depend on it.
        chat: use the chat template (default: when the tokenizer has one).
    """
    return [
        g.text
        for g in generate_detailed(
            model,
            tokenizer,
            prompts,
            delta=delta,
            m=m,
            positions=positions,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            seed=seed,
            batch_size=batch_size,
            chat=chat,
            system_prompt=system_prompt,
            progress=progress,
        )
    ]


def generate_text(
    model: Any,
    tokenizer: Any,
    queries: Sequence[str],
    *,
    delta: Steerable | None = None,
    m: Multiplier = 1.0,
    positions: PositionMode = "all",
    max_new_tokens: int = 128,
    batch_size: int = 8,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    system_prompt: str | None = None,
    progress: bool = False,
) -> list[str]:
    """Completions for ``queries``; greedy when ``temperature == 0`` (kept for older callers;
    see :func:`generate`)."""
    return generate(
        model,
        tokenizer,
        queries,
        delta=delta,
        m=m,
        positions=positions,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        system_prompt=system_prompt,
        progress=progress,
    )


class ResponseCache:
    """Base-model responses on disk: one JSON file per model fingerprint, written atomically."""

    def __init__(self, directory: Path, model_key: str, settings: dict[str, Any]) -> None:
        self.path = directory / f"{model_key}.json"
        self.settings = settings
        self._entries: dict[str, str] = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                self._entries = {str(k): str(v) for k, v in data.get("responses", {}).items()}
            except (OSError, ValueError, AttributeError):
                self._entries = {}  # unreadable cache: regenerate rather than fail

    def key(self, instruction: str) -> str:
        blob = json.dumps([instruction, self.settings], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def get(self, instruction: str) -> str | None:
        return self._entries.get(self.key(instruction))

    def put_many(self, items: dict[str, str]) -> None:
        for instruction, response in items.items():
            self._entries[self.key(instruction)] = response
        write_text_atomic(
            self.path, json.dumps({"settings": self.settings, "responses": self._entries})
        )


def base_responder(
    model: Any,
    tokenizer: Any,
    *,
    cache_dir: str | Path | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    progress: bool = True,
) -> Callable[[Sequence[str]], list[str]]:
    """A responder for :func:`unisteer.data.axbench.read_axbench`: the unsteered model's greedy
    responses to instructions, generated once and cached on disk under the model's
    fingerprint (keyed by instruction and generation settings), saved as they are made so an
    interrupted run resumes."""
    from unisteer.model.load import cache_root

    fp = model_fingerprint(model, tokenizer)
    settings = {"max_new_tokens": max_new_tokens, "decoding": "greedy"}
    directory = Path(cache_dir) if cache_dir is not None else cache_root() / "responses"
    cache = ResponseCache(directory, f"{fp['config']}-{fp['tokenizer']}", settings)

    def respond(instructions: Sequence[str]) -> list[str]:
        todo = list(dict.fromkeys(i for i in instructions if cache.get(i) is None))
        for start in range(0, len(todo), batch_size * 4):
            chunk = todo[start : start + batch_size * 4]
            texts = generate_text(
                model,
                tokenizer,
                chunk,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                progress=progress,
            )
            cache.put_many(dict(zip(chunk, texts, strict=True)))
        out = []
        for i in instructions:
            response = cache.get(i)
            assert response is not None
            out.append(response)
        return out

    return respond
