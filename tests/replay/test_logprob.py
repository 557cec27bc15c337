"""Token log-probabilities: exact against a float64 log-softmax, unbiased over many tokens."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unisteer.replay.logprob import token_logprobs, unembed_logprobs


def reference(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.double(), -1).gather(-1, targets[..., None])[..., 0]


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    scale=st.floats(0.01, 60.0),
    shift=st.floats(-1e3, 1e3),
    vocab=st.integers(1, 3000),
)
def test_matches_float64_log_softmax(seed: int, scale: float, shift: float, vocab: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 5, vocab, generator=g) * scale + shift
    targets = torch.randint(0, vocab, (3, 5), generator=g)
    got = token_logprobs(logits, targets)
    assert got.dtype == torch.float64 and got.shape == (3, 5)
    want = reference(logits, targets)
    # the float32 inputs are exact; the error is float32 rounding of (x - max) and of the sum
    tol = 1e-6 * (1 + scale) + 1e-7 * abs(shift)
    assert torch.allclose(got, want, rtol=0, atol=tol), (got - want).abs().max()


def test_a_sum_over_many_tokens_has_no_bias() -> None:
    """The point of the module: float32 log_softmax drifts one way over a large vocabulary;
    summed over 2,000 tokens, token_logprobs stays within 1e-4 of the float64 value."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2000, 49152, generator=g) * 4 + 10
    targets = torch.randint(0, 49152, (2000,), generator=g)
    want = reference(logits, targets).sum()
    assert abs(float(token_logprobs(logits, targets).sum() - want)) < 1e-4


def test_gradient_is_onehot_minus_softmax() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 50, generator=g, dtype=torch.float32, requires_grad=True)
    targets = torch.tensor([0, 7, 49, 3])
    token_logprobs(logits, targets).sum().backward()
    assert logits.grad is not None
    want = torch.nn.functional.one_hot(targets, 50).float() - torch.softmax(logits.detach(), -1)
    assert torch.allclose(logits.grad, want, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    vocab=st.integers(1, 700),
    chunk=st.integers(1, 300),
    softcap=st.sampled_from([None, 3.0, 30.0]),
    with_bias=st.booleans(),
    per_position=st.integers(0, 3),
)
def test_unembed_in_vocabulary_slices_matches_float64(
    seed: int, vocab: int, chunk: int, softcap: float | None, with_bias: bool, per_position: int
) -> None:
    """The sliced unembedding equals a float64 log-softmax of the whole logits, for any slice
    size, with or without bias and soft-capping, one or several targets per position."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 16, generator=g) * 3
    w = torch.randn(vocab, 16, generator=g)
    b = torch.randn(vocab, generator=g) if with_bias else None
    shape = (6,) if per_position == 0 else (6, per_position)
    targets = torch.randint(0, vocab, shape, generator=g)
    got = unembed_logprobs(x, w, b, targets, softcap, vocab_chunk=chunk)
    logits = x.double() @ w.double().T + (0 if b is None else b.double())
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    full = torch.log_softmax(logits, -1)
    want = full.gather(-1, targets if per_position else targets[:, None])
    want = want if per_position else want[:, 0]
    assert got.dtype == torch.float64 and got.shape == targets.shape
    assert torch.allclose(got, want, rtol=0, atol=2e-5), (got - want).abs().max()


def test_unembed_agrees_with_token_logprobs_on_float32_logits() -> None:
    g = torch.Generator().manual_seed(3)
    x, w = torch.randn(50, 64, generator=g), torch.randn(5000, 64, generator=g) * 0.3
    targets = torch.randint(0, 5000, (50,), generator=g)
    whole = token_logprobs(x @ w.T, targets)
    sliced = unembed_logprobs(x, w, None, targets, vocab_chunk=777)
    assert (whole - sliced).abs().max() < 2e-6
