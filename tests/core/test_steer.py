"""Applying deltas: exactness at m = 0, no mutation, linearity, merge equivalence, batching."""

from __future__ import annotations

import copy

import pytest
import torch

import unisteer
from unisteer import SteeringError, steer

from conftest import make_delta
from tiny_models import ARCHS, tiny_model

KINDS = ("vector", "lora", "local_weight")


def ids_and_mask(
    batch: int = 3, length: int = 7, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 96, (batch, length), generator=gen)
    mask = torch.ones_like(ids)
    return ids, mask


def logits(
    model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def hook_counts(model: torch.nn.Module) -> list[int]:
    return [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", KINDS)
def test_zero_multiplier_is_bit_exact_and_nonzero_steers(arch: str, kind: str) -> None:
    model = tiny_model(arch)
    delta = make_delta(model, kind)
    ids, mask = ids_and_mask()
    base = logits(model, ids, mask)
    for m in (0.0, 0, torch.zeros(3), torch.zeros(3, 7)):
        with steer(model, delta, m=m):
            assert torch.equal(logits(model, ids, mask), base), f"m={m!r} changed outputs"
    with steer(model, delta, m=1.5):
        steered = logits(model, ids, mask)
    assert not torch.allclose(steered, base, atol=1e-4), "a non-zero delta had no effect"


@pytest.mark.parametrize("kind", KINDS)
def test_exit_restores_model_even_when_body_raises(llama: torch.nn.Module, kind: str) -> None:
    delta = make_delta(llama, kind)
    ids, mask = ids_and_mask()
    state = {k: v.clone() for k, v in llama.state_dict().items()}
    hooks = hook_counts(llama)
    base = logits(llama, ids, mask)
    with pytest.raises(RuntimeError, match="boom"), steer(llama, delta, m=3.0):
        logits(llama, ids, mask)
        raise RuntimeError("boom")
    after = llama.state_dict()
    assert state.keys() == after.keys()
    assert all(torch.equal(state[k], after[k]) for k in state)
    assert hook_counts(llama) == hooks
    assert torch.equal(logits(llama, ids, mask), base)
    assert all(not p.requires_grad or p.grad is None for p in llama.parameters())


def test_vector_is_linear_in_m(llama: torch.nn.Module) -> None:
    delta = make_delta(llama, "vector")
    ids, mask = ids_and_mask()
    with steer(llama, delta, m=2.5):
        once = logits(llama, ids, mask)
    with steer(llama, [delta, delta], m=[1.0, 1.5]):
        stacked = logits(llama, ids, mask)
    with steer(llama, delta, m=1.0), steer(llama, delta, m=1.5):
        nested = logits(llama, ids, mask)
    torch.testing.assert_close(stacked, once, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(nested, once, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_local_weight_equals_edited_down_proj(arch: str) -> None:
    model = tiny_model(arch)
    delta = make_delta(model, "local_weight", layer=2)
    ids, mask = ids_and_mask()
    m = 0.7
    # Reference by hand: a copy whose W_down and b_down include m·ΔW and m·Δb.
    ref = copy.deepcopy(model)
    if delta.site_kind == "experts":  # every expert's W_e + m·ΔW_e
        owner, name = delta.site.rsplit(".", 1)
        with torch.no_grad():
            getattr(ref.get_submodule(owner), name).add_(m * delta.weight_.detach())
        ref_logits = logits(ref, ids, mask)
        with steer(model, delta, m=m):
            torch.testing.assert_close(logits(model, ids, mask), ref_logits, rtol=1e-4, atol=1e-4)
        merged = unisteer.merged_copy(model, delta, m)
        torch.testing.assert_close(logits(merged, ids, mask), ref_logits, rtol=1e-4, atol=1e-4)
        return
    lin = ref.get_submodule(delta.site)
    with torch.no_grad():
        dw, db = delta.weight_.detach(), delta.bias_.detach()
        if isinstance(lin, torch.nn.Linear):
            lin.weight += m * dw
        else:  # GPT-2 Conv1D keeps W as [in, out]
            lin.weight += m * dw.T
        if lin.bias is None:
            lin.bias = torch.nn.Parameter(m * db)
        else:
            lin.bias += m * db
    expected = logits(ref, ids, mask)
    with steer(model, delta, m=m):
        got = logits(model, ids, mask)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    merged = unisteer.merged_copy(model, delta, m)
    torch.testing.assert_close(logits(merged, ids, mask), expected, rtol=1e-4, atol=1e-4)


def test_lora_merge_uses_reported_weight(llama: torch.nn.Module) -> None:
    delta = make_delta(llama, "lora")
    ids, mask = ids_and_mask()
    with steer(llama, delta, m=-1.3):
        steered = logits(llama, ids, mask)
    merged = unisteer.merged_copy(llama, delta, -1.3)
    torch.testing.assert_close(logits(merged, ids, mask), steered, rtol=1e-4, atol=1e-4)
    with pytest.raises(unisteer.SiteError, match="residual"):
        unisteer.merged_copy(llama, make_delta(llama, "vector"), 1.0)


@pytest.mark.parametrize("kind", KINDS)
def test_per_row_multiplier_equals_separate_runs(llama: torch.nn.Module, kind: str) -> None:
    delta = make_delta(llama, kind)
    ids, mask = ids_and_mask()
    ms = torch.tensor([0.0, 1.0, -2.0])
    with steer(llama, delta, m=ms):
        batched = logits(llama, ids, mask)
    for i, m in enumerate(ms.tolist()):
        with steer(llama, delta, m=m):
            single = logits(llama, ids[i : i + 1], mask[i : i + 1])
        torch.testing.assert_close(batched[i : i + 1], single, rtol=1e-5, atol=1e-5)
    assert torch.equal(batched[0], logits(llama, ids, mask)[0])


@pytest.mark.parametrize("kind", KINDS)
def test_per_token_multiplier_equals_mask_times_scalar(llama: torch.nn.Module, kind: str) -> None:
    delta = make_delta(llama, kind)
    ids, mask = ids_and_mask()
    gen = torch.Generator().manual_seed(3)
    token_mask = torch.rand(3, 7, generator=gen) > 0.5
    with steer(llama, delta, m=token_mask.float() * 2.0):
        a = logits(llama, ids, mask)
    with steer(llama, delta, m=2.0, positions=token_mask):
        b = logits(llama, ids, mask)
    assert torch.equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_completion_positions_leave_prompt_logits_exact(llama: torch.nn.Module, kind: str) -> None:
    delta = make_delta(llama, kind)
    ids, mask = ids_and_mask()
    base = logits(llama, ids, mask)
    lengths = torch.tensor([2, 4, 7])
    with steer(llama, delta, m=2.0, positions="completion", prompt_length=lengths):
        out = logits(llama, ids, mask)
    for row, p in enumerate(lengths.tolist()):
        assert torch.equal(out[row, :p], base[row, :p])
        if p < 7:
            assert not torch.allclose(out[row, p:], base[row, p:], atol=1e-4)
    with steer(llama, delta, m=2.0, positions="prompt", prompt_length=lengths):
        out = logits(llama, ids, mask)
    assert torch.equal(out[0, :0], base[0, :0])
    assert not torch.allclose(out[0, :2], base[0, :2], atol=1e-4)


def test_several_kinds_at_once(llama: torch.nn.Module) -> None:
    vec, lora = make_delta(llama, "vector"), make_delta(llama, "lora", layer=2)
    ids, mask = ids_and_mask()
    with steer(llama, vec, m=1.0):
        only_vec = logits(llama, ids, mask)
    with steer(llama, [vec, lora], m=[1.0, 0.0]):
        assert torch.equal(logits(llama, ids, mask), only_vec)
    with steer(llama, [vec, lora], m=[1.0, 1.0]):
        both = logits(llama, ids, mask)
    assert not torch.allclose(both, only_vec, atol=1e-4)


def test_bad_multipliers_and_positions_are_named(llama: torch.nn.Module) -> None:
    delta = make_delta(llama, "vector")
    ids, mask = ids_and_mask()
    with (
        pytest.raises(SteeringError, match="2 rows but the batch has 3"),
        steer(llama, delta, m=torch.ones(2)),
    ):
        logits(llama, ids, mask)
    with (
        pytest.raises(SteeringError, match="covers 5 columns"),
        steer(llama, delta, m=torch.ones(3, 5)),
    ):
        logits(llama, ids, mask)
    with pytest.raises(SteeringError, match="positions must be"):
        steer(llama, delta, positions="generated")  # type: ignore[arg-type]
    with pytest.raises(SteeringError, match="finite"):
        steer(llama, delta, m=float("nan"))
    with pytest.raises(SteeringError, match="2 deltas but 3 multipliers"):
        steer(llama, [delta, delta], m=[1.0, 2.0, 3.0])


def test_delta_for_another_model_is_refused_on_enter(llama: torch.nn.Module) -> None:
    gpt2 = tiny_model("gpt2")
    delta = make_delta(llama, "lora")
    with pytest.raises(unisteer.SiteError, match="does not exist"), steer(gpt2, delta):
        pass
    assert hook_counts(gpt2) == hook_counts(tiny_model("gpt2"))


def test_gradients_reach_delta_only(llama: torch.nn.Module) -> None:
    delta = make_delta(llama, "lora")
    for p in llama.parameters():
        p.requires_grad_(False)
    ids, mask = ids_and_mask()
    with steer(llama, delta, m=1.0):
        loss = llama(input_ids=ids, attention_mask=mask).logits.square().mean()
    loss.backward()
    assert delta.lora_A.grad is not None and delta.lora_B.grad is not None
    assert float(delta.lora_B.grad.abs().sum()) > 0


@pytest.mark.parametrize("kind", KINDS)
def test_bfloat16_model_keeps_float32_delta(kind: str) -> None:
    model = tiny_model("llama").to(torch.bfloat16)
    delta = make_delta(model, kind)
    ids, mask = ids_and_mask()
    base = logits(model, ids, mask)
    with steer(model, delta, m=0.0):
        assert torch.equal(logits(model, ids, mask), base)
    with steer(model, delta, m=1.0):
        out = logits(model, ids, mask)
    assert out.dtype == torch.bfloat16 and not torch.equal(out, base)
    assert all(p.dtype == torch.float32 for p in delta.parameters())


def test_at_site_equals_the_hook_on_the_block_output(llama: torch.nn.Module) -> None:
    """Applying a residual delta to a block's output by hand (how a replay starting after the
    site's block steers) gives exactly what the site hook gives, per row and per position."""
    from unisteer.core.sites import find_blocks

    delta = make_delta(llama, "vector")
    block = llama.get_submodule(delta.site)
    ids, mask = ids_and_mask()
    seen: list[torch.Tensor] = []

    def record(mod: torch.nn.Module, args: object, out: object) -> None:
        seen.append(out[0] if isinstance(out, tuple) else out)  # type: ignore[arg-type]

    handle = block.register_forward_hook(record)
    logits(llama, ids, mask)  # the unsteered block output
    handle.remove()
    ms = torch.tensor([0.5, 0.0, -3.0])
    prompt = torch.tensor([2, 4, 6])
    with steer(llama, delta, m=ms, positions="completion", prompt_length=prompt) as s:
        handle = block.register_forward_hook(record)  # after the steering hook: sees its output
        try:
            logits(llama, ids, mask)
        finally:
            handle.remove()
        with s.calling(3, ids.shape[1]):
            by_hand = s.at_site(0, seen[0])
    assert torch.equal(by_hand, seen[1])
    assert not torch.equal(seen[0], seen[1])
    lora = make_delta(llama, "lora")
    with steer(llama, lora, m=1.0) as s, pytest.raises(SteeringError, match="residual"):
        s.at_site(0, seen[0])
    assert find_blocks(llama)[1]  # the site is a decoder block
