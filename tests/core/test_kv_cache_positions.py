"""Golden tests: steering under KV-cached ``generate`` equals a step-by-step uncached loop.

For every kind, every position mode (all, prompt, completion, explicit mask, per-token m) and
both padding sides, greedy ``model.generate`` (prefill + one token per step through the cache)
must produce the same tokens and logits as a loop that re-runs the whole sequence without a
cache at each step, where the prompt length is given explicitly. A second test pins exactly
which (row, column) cells receive the multiplier during ``generate``.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest
import torch

from unisteer import steer

from conftest import make_delta
from tiny_models import ARCHS, tiny_model

steer_module = importlib.import_module("unisteer.core.steer")  # the package re-exports steer()
KINDS = ("vector", "lora", "local_weight")
MODES = ("all", "prompt", "completion", "mask", "per_token_m")
NEW = 4
PROMPT = 6
EOS_MASK = torch.arange(96) == 2  # the tiny models' eos_token_id


def padded_prompts(side: str) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    ids = torch.randint(3, 96, (3, PROMPT), generator=gen)
    mask = torch.ones_like(ids)
    lengths = [6, 4, 3]
    for row, n in enumerate(lengths):
        pad = PROMPT - n
        if side == "left":
            ids[row, :pad] = 0
            mask[row, :pad] = 0
        elif pad:
            ids[row, n:] = 0
            mask[row, n:] = 0
    return ids, mask


def steering_args(mode: str) -> dict[str, Any]:
    total = PROMPT + NEW
    gen = torch.Generator().manual_seed(11)
    if mode == "mask":
        return {"m": 2.0, "positions": torch.rand(3, total, generator=gen) > 0.4}
    if mode == "per_token_m":
        return {"m": torch.randn(3, total, generator=gen) * 2.0}
    return {"m": 2.0, "positions": mode}


def generate_cached(
    model: Any, ids: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=NEW,
            min_new_tokens=NEW,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=0,
        )
    return out.sequences[:, PROMPT:], torch.stack(out.logits, dim=1)


def generate_uncached(
    model: Any, ids: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    tokens, step_logits = [], []
    # Position ids exactly as transformers' generate makes them: from the mask for the prompt
    # (0 at padding), then the last position + 1 for each new token.
    position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    with torch.no_grad():
        for _ in range(NEW):
            out = model(
                input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False
            )
            last = out.logits[:, -1]
            # generate(min_new_tokens=NEW) never picks EOS: neither may the loop, or the two
            # would differ for a reason that has nothing to do with steering.
            nxt = last.masked_fill(EOS_MASK, float("-inf")).argmax(-1)
            tokens.append(nxt)
            step_logits.append(last)
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(nxt[:, None])], dim=1)
            position_ids = torch.cat([position_ids, position_ids[:, -1:] + 1], dim=1)
    return torch.stack(tokens, 1), torch.stack(step_logits, 1)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_cached_generate_matches_uncached_loop(kind: str, mode: str, side: str) -> None:
    model = tiny_model("llama")
    delta = make_delta(model, kind)
    ids, mask = padded_prompts(side)
    args = steering_args(mode)
    with steer(model, delta, **args):
        cached_tokens, cached_logits = generate_cached(model, ids, mask)
    with steer(model, delta, prompt_length=PROMPT, **args):
        loop_tokens, loop_logits = generate_uncached(model, ids, mask)
    torch.testing.assert_close(cached_logits, loop_logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(cached_tokens, loop_tokens)
    # The steering did something (else the comparison would be vacuous).
    _, plain_logits = generate_cached(model, ids, mask)
    assert not torch.allclose(plain_logits, cached_logits, atol=1e-3)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("mode", ["all", "completion", "prompt"])
def test_cached_generate_matches_uncached_loop_on_every_architecture(arch: str, mode: str) -> None:
    model = tiny_model(arch)
    delta = make_delta(model, "lora")
    ids, mask = padded_prompts("left")
    with steer(model, delta, m=2.0, positions=mode):
        cached_tokens, cached_logits = generate_cached(model, ids, mask)
    with steer(model, delta, m=2.0, positions=mode, prompt_length=PROMPT):
        loop_tokens, loop_logits = generate_uncached(model, ids, mask)
    torch.testing.assert_close(cached_logits, loop_logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(cached_tokens, loop_tokens)


@pytest.mark.parametrize("side", ["left", "right"])
def test_which_cells_are_steered_during_generate(
    monkeypatch: pytest.MonkeyPatch, side: str
) -> None:
    """Pin the (row, column) cells that get a non-zero multiplier, call by call."""
    model = tiny_model("llama")
    delta = make_delta(model, "vector")
    ids, mask = padded_prompts(side)
    seen: dict[str, torch.Tensor] = {}
    real = steer_module.token_scale

    def recording(
        m: Any, positions: Any, columns: torch.Tensor, batch: int, prompt_length: Any
    ) -> Any:
        scale = real(m, positions, columns, batch, prompt_length)
        grid = seen.setdefault(str(positions), torch.zeros(batch, PROMPT + NEW))
        values = (
            scale
            if isinstance(scale, torch.Tensor)
            else torch.full((batch, columns.numel()), scale)
        )
        grid[:, columns] = values
        return scale

    monkeypatch.setattr(steer_module, "token_scale", recording)
    for mode in ("all", "prompt", "completion"):
        with steer(model, delta, m=1.0, positions=mode):  # type: ignore[arg-type]
            generate_cached(model, ids, mask)
    # The last generated token is never fed back, so the final column is never computed.
    computed = PROMPT + NEW - 1
    expected_all = torch.zeros(3, PROMPT + NEW)
    expected_all[:, :computed] = 1.0
    expected_prompt = torch.zeros(3, PROMPT + NEW)
    expected_prompt[:, :PROMPT] = 1.0
    expected_completion = torch.zeros(3, PROMPT + NEW)
    expected_completion[:, PROMPT:computed] = 1.0
    assert torch.equal(seen["all"], expected_all)
    assert torch.equal(seen["prompt"], expected_prompt)
    assert torch.equal(seen["completion"], expected_completion)


def test_completion_steering_leaves_first_generated_token_alone() -> None:
    model = tiny_model("llama")
    delta = make_delta(model, "vector")
    ids, mask = padded_prompts("left")
    _, plain = generate_cached(model, ids, mask)
    with steer(model, delta, m=3.0, positions="completion"):
        _, steered = generate_cached(model, ids, mask)
    # The first new token is predicted from prompt columns only: exactly as unsteered.
    assert torch.equal(steered[:, 0], plain[:, 0])
    assert not torch.allclose(steered[:, 1:], plain[:, 1:], atol=1e-3)
