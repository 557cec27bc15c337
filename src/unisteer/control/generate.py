"""Generation with a controller: batched, KV-cached, each steered call evaluating the
controller's candidate multipliers as extra rows of the same forward pass.

Per prompt the loop keeps two caches (:class:`unisteer.model.kv.BatchCache`): the *path*, the
sequence as generated (each position steered with the ``m_t`` chosen for it), and, when the
controller asks for it, the *reference*: the same tokens through the unsteered model. A steered
call runs the reference row and one path row per candidate in one batch (``1 + K`` rows per
prompt); the controller picks a candidate per prompt, the next token is drawn from that row,
and that row's keys and values become the path's. Positions follow
:func:`unisteer.generation.generate`: the prefill is the prompt (steered under ``"all"`` and
``"prompt"``, and then chosen by the same rule on the last prompt position's distribution), the
decoding calls are the completion (steered under ``"all"`` and ``"completion"``).

``m_t`` of every generated token (the multiplier of the call whose distribution it was drawn
from; 0 where the positions rule leaves the call unsteered) comes back with the text, with the
KL of that distribution to the unsteered one, and the token's log-probability under it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor
from transformers.cache_utils import DynamicCache

from unisteer.control.controllers import Controller, log_probs
from unisteer.core.positions import PositionMode
from unisteer.core.steer import steer
from unisteer.core.steering_set import Steerable
from unisteer.data.chat import has_chat_template
from unisteer.data.conversation import Query
from unisteer.data.tokens import left_padded, pad_id
from unisteer.errors import SteeringError
from unisteer.generation import RowSampler, encode_prompts, eos_ids, row_seeds
from unisteer.model.config import cache_keyword
from unisteer.model.kv import BatchCache, mergeable
from unisteer.model.memory import model_device


@dataclass(frozen=True)
class ControlledGeneration:
    """One completion under a controller: its text, tokens, and per token the multiplier used
    (``m``) and the KL of its distribution to the unsteered model's (``kl``, NaN when the
    controller computes no reference), and the token's log-probability under that distribution
    (``logprob``: before temperature and truncation, the model's own)."""

    text: str
    token_ids: tuple[int, ...]
    m: tuple[float, ...]
    kl: tuple[float, ...]
    finished: bool
    logprob: tuple[float, ...] = ()


class _Run:
    """One batch of prompts under a controller (the loop of :func:`generate_controlled`)."""

    def __init__(
        self, model: Any, delta: Steerable, controller: Controller, positions: PositionMode
    ) -> None:
        self.model = model
        self.delta = delta
        self.controller = controller
        self.positions = positions
        self.device = model_device(model)
        self.cache_kw = cache_keyword(model)
        self.pristine: list[bool] = []

    def _forward(
        self, ids: Tensor, batch: BatchCache | None, mask: Tensor, m: Tensor | None
    ) -> tuple[Tensor, BatchCache]:
        """Logits at the last position of each row, and the rows' cache after the call.
        ``batch`` is the cache before it (``None``: a prefill of ``ids`` with ``mask``)."""
        if batch is None:
            cache = DynamicCache(config=self.model.config)
            full = mask
            position = (mask.cumsum(-1) - 1).clamp_min(0)
            at = torch.arange(ids.shape[1], device=self.device)
        else:
            cache = batch.cache
            full = torch.cat([batch.mask, mask], dim=1)
            position = batch.lengths[:, None]
            at = torch.tensor([batch.width], device=self.device)
        steering = (
            steer(self.model, self.delta, m=m) if m is not None and bool(m.any()) else nullcontext()
        )
        with torch.no_grad(), steering:
            out = self.model(
                input_ids=ids, attention_mask=full, position_ids=position, cache_position=at,
                use_cache=True, **{self.cache_kw: cache},
            )  # fmt: skip
        if batch is None:
            if not mergeable(cache):
                raise SteeringError(
                    f"controllers need a KV cache whose rows can be repeated and merged; "
                    f"{type(self.model).__name__}'s is not made of plain DynamicLayer layers "
                    "(sliding windows, linear attention): use a fixed m"
                )
            after = BatchCache(cache, mask.clone(), mask.sum(1))
        else:
            after = BatchCache(cache, batch.mask, batch.lengths)
            after.grow()
        return out.logits[:, -1], after

    def _steered(
        self, ids: Tensor, path: BatchCache | None, ref: BatchCache | None, mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, BatchCache, BatchCache | None]:
        """One steered call for the ``B`` prompts: ``(logits of the chosen rows [B, V], m [B],
        kl [B], the new path, the new reference)``."""
        c = self.controller
        b, k = ids.shape[0], len(c.candidates)
        grid = torch.tensor(c.candidates, dtype=torch.float32)
        rep = [i for i in range(b) for _ in range(k)]
        rows_ids = ids[rep]
        rows_mask = mask[rep]
        m = grid.repeat(b)
        if path is None:  # the prefill: reference and candidates from the empty cache
            if c.needs_reference:
                rows_ids = torch.cat([ids, rows_ids])
                rows_mask = torch.cat([mask, rows_mask])
                m = torch.cat([torch.zeros(b), m])
            logits, after = self._forward(rows_ids, None, rows_mask, m)
        else:
            cache = path if k == 1 else path.keep(rep)  # one candidate: the path itself
            if c.needs_reference:
                assert ref is not None
                cache = ref.join(cache)
                rows_ids = torch.cat([ids, rows_ids])
                m = torch.cat([torch.zeros(b), m])
            logits, after = self._forward(rows_ids, cache, torch.ones_like(rows_ids), m)
        off = b if c.needs_reference else 0
        cand = log_probs(logits[off:]).reshape(b, k, -1)
        reference = log_probs(logits[:b]) if c.needs_reference else None
        index, kl = c.choose(cand.cpu(), reference.cpu() if reference is not None else None)
        chosen = [off + i * k + int(index[i]) for i in range(b)]
        for i in range(b):
            if c.candidates[int(index[i])] != 0.0:
                self.pristine[i] = False
            elif off and self.pristine[i]:  # never steered: m = 0 *is* the unsteered row
                chosen[i], kl[i] = i, 0.0
        new_path = after if off == 0 and k == 1 else after.keep(chosen)
        new_ref = after.keep(list(range(b))) if c.needs_reference else None
        picked = torch.tensor([c.candidates[int(i)] for i in index], dtype=torch.float64)
        return logits[chosen], picked, kl, new_path, new_ref  # m_t: the candidate's own value

    def run(
        self, prompts: list[list[int]], pad: int, eos: set[int], max_new: int,
        samplers: list[RowSampler] | None, forced: list[list[int]] | None = None,
    ) -> list[ControlledGeneration]:  # fmt: skip
        """Generate, or with ``forced`` feed those tokens (teacher forcing: their
        log-probabilities are each generation's ``logprob``)."""
        b = len(prompts)
        ids, mask = left_padded(prompts, pad)
        ids, mask = ids.to(self.device), mask.to(self.device)
        # A prompt whose path was never steered is the unsteered model: its m = 0 candidate
        # is then taken from the reference row itself (the same numbers to the last bit,
        # where a second row of the same batch could round differently).
        self.pristine = [True] * b
        prompt_steered = self.positions in ("all", "prompt")
        completion_steered = self.positions in ("all", "completion")
        path: BatchCache | None = None
        ref: BatchCache | None = None
        if prompt_steered:
            logits, m, kl, path, ref = self._steered(ids, None, None, mask)
        else:
            logits, path = self._forward(ids, None, mask, None)
            m, kl = torch.zeros(b), self._unsteered_kl(b)
            ref = path if self.controller.needs_reference else None
        tokens: list[list[int]] = [[] for _ in range(b)]
        ms: list[list[float]] = [[] for _ in range(b)]
        kls: list[list[float]] = [[] for _ in range(b)]
        lps: list[list[float]] = [[] for _ in range(b)]
        done = [False] * b
        if forced is not None:
            max_new = max(len(f) for f in forced)
        for step in range(max_new):
            if forced is None:
                nxt = self._pick(logits, samplers)
            else:
                nxt = [f[step] if step < len(f) else pad for f in forced]
            lp = log_probs(logits)
            for i in range(b):
                if done[i]:
                    continue
                if forced is None and nxt[i] in eos:
                    done[i] = True
                    continue
                if forced is not None and step >= len(forced[i]):
                    done[i] = True
                    continue
                lps[i].append(float(lp[i, nxt[i]]))
                tokens[i].append(nxt[i])
                ms[i].append(float(m[i]))
                kls[i].append(float(kl[i]))
            if all(done) or step == max_new - 1:
                break
            feed = torch.tensor([[t if t >= 0 else pad] for t in nxt], device=self.device)
            if completion_steered:
                logits, m, kl, path, ref = self._steered(feed, path, ref, torch.ones_like(feed))
            else:
                assert path is not None
                logits, path = self._forward(feed, path, torch.ones_like(feed), None)
                m, kl = torch.zeros(b), self._unsteered_kl(b)
        return [
            ControlledGeneration(
                "", tuple(tokens[i]), tuple(ms[i]), tuple(kls[i]), done[i], tuple(lps[i])
            )
            for i in range(b)
        ]

    def _unsteered_kl(self, b: int) -> Tensor:
        """The KL of an unsteered call: 0, or NaN for a controller that computes none."""
        return torch.zeros(b) if self.controller.needs_reference else torch.full((b,), math.nan)

    @staticmethod
    def _pick(logits: Tensor, samplers: list[RowSampler] | None) -> list[int]:
        if samplers is None:
            return [int(t) for t in logits.argmax(-1).tolist()]
        out = []
        for i, s in enumerate(samplers):
            out.append(int(s(torch.empty(0), logits[i : i + 1].float())[0].argmax()))
        return out


def generate_controlled(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Query],
    delta: Steerable,
    controller: Controller,
    *,
    positions: PositionMode = "all",
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int | None = None,
    seed: int | Sequence[int] = 0,
    batch_size: int = 8,
    system_prompt: str | None = None,
) -> list[ControlledGeneration]:
    """Completions of ``prompts`` steered by ``delta`` with ``m_t`` chosen by ``controller``
    (see the module docstring); sampling as in :func:`unisteer.generation.generate` (one seeded
    generator per prompt: ``seed`` an int, row ``i`` drawing with ``row_seed(seed, i)``, or one
    seed per prompt)."""
    if positions not in ("all", "prompt", "completion"):
        raise ValueError(f"positions must be 'all', 'prompt' or 'completion', got {positions!r}")
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("max_new_tokens and batch_size must be at least 1")
    encoded = encode_prompts(tokenizer, prompts, has_chat_template(tokenizer), system_prompt)
    if any(not e for e in encoded):
        raise ValueError("a prompt tokenises to nothing; give it some text")
    n = len(encoded)
    seeds = row_seeds(seed, n)
    pad, eos = pad_id(tokenizer), eos_ids(model, tokenizer)
    runner = _Run(model, delta, controller, positions)
    out: list[ControlledGeneration] = []
    for start in range(0, n, batch_size):
        chunk = encoded[start : start + batch_size]
        samplers = (
            [RowSampler([seeds[start + i]], temperature, top_p, top_k) for i in range(len(chunk))]
            if temperature > 0
            else None
        )
        for g in runner.run(chunk, pad, eos, max_new_tokens, samplers):
            text = str(tokenizer.decode(list(g.token_ids), skip_special_tokens=True)).strip()
            out.append(replace(g, text=text))
    return out
