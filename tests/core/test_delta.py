"""The affine delta as pure math: ΔW x + Δb for every kind, checked against float64 by hand."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unisteer import Delta
from unisteer.core.delta import add_scaled

from conftest import randomize


def build(kind: str, d_in: int, d_out: int, rank: int) -> Delta:
    if kind == "vector":
        return Delta.vector(d_out, site="s", site_kind="linear", d_in=d_in)
    if kind == "lora":
        return Delta.lora(d_in, d_out, rank, site="s")
    return Delta.local_weight(d_in, d_out, site="s")


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["vector", "lora", "local_weight"]),
    d_in=st.integers(1, 12),
    d_out=st.integers(1, 12),
    rank=st.integers(1, 4),
    lead=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    seed=st.integers(0, 2**16),
)
def test_forward_is_weight_times_x_plus_bias(
    kind: str, d_in: int, d_out: int, rank: int, lead: list[int], seed: int
) -> None:
    delta = randomize(build(kind, d_in, d_out, rank), seed)
    x = torch.randn(*lead, d_in, generator=torch.Generator().manual_seed(seed + 1))
    # Hand-written reference in float64 from the paper's table.
    if kind == "vector":
        dw = torch.zeros(d_out, d_in, dtype=torch.float64)
        db = delta.bias_.detach().double()
    elif kind == "lora":
        dw = delta.lora_B.detach().double() @ delta.lora_A.detach().double()
        db = torch.zeros(d_out, dtype=torch.float64)
    else:
        dw = delta.weight_.detach().double()
        db = delta.bias_.detach().double()
    expected = x.double() @ dw.T + db
    got = delta(x)
    assert got.dtype == torch.float32 and got.shape == (*lead, d_out)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    # The reported ΔW and Δb give the same map: one code path for apply, merge and save.
    w, b = delta.weight(), delta.bias()
    via_report = torch.zeros(*lead, d_out, dtype=torch.float64)
    if w is not None:
        via_report = via_report + x.double() @ w.detach().double().T
    if b is not None:
        via_report = via_report + b.detach().double()
    torch.testing.assert_close(via_report, expected, rtol=1e-5, atol=1e-5)


def test_parameter_counts_follow_table_1() -> None:
    d_in, d_out, r = 1536, 576, 4
    assert Delta.vector(d_out, site="s").num_parameters() == d_out
    assert Delta.lora(d_in, d_out, r, site="s").num_parameters() == r * (d_in + d_out)
    assert Delta.local_weight(d_in, d_out, site="s").num_parameters() == d_in * d_out + d_out


def test_initialisation() -> None:
    gen = torch.Generator().manual_seed(0)
    lora = Delta.lora(16, 8, 2, site="s", generator=gen)
    assert torch.count_nonzero(lora.lora_B) == 0 and torch.count_nonzero(lora.lora_A) > 0
    assert torch.count_nonzero(lora.weight()) == 0  # type: ignore[arg-type]
    local = Delta.local_weight(16, 8, site="s")
    assert torch.count_nonzero(local.weight_) == 0 and torch.count_nonzero(local.bias_) == 0
    vec = Delta.vector(8, site="s", init_std=0.01, generator=gen)
    assert 0 < float(vec.bias_.detach().abs().max()) < 0.1
    for p in (*lora.parameters(), *local.parameters(), *vec.parameters()):
        assert p.dtype == torch.float32


def test_invalid_constructions_are_refused() -> None:
    with pytest.raises(ValueError, match="kind must be"):
        Delta("steer", 4, 4, site="s")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only kind='vector'"):
        Delta("lora", 4, 4, site="s", site_kind="residual", rank=2)
    with pytest.raises(ValueError, match="positive rank"):
        Delta("lora", 4, 4, site="s", rank=0)
    with pytest.raises(ValueError, match="rank applies to lora"):
        Delta("local_weight", 4, 4, site="s", rank=2)
    with pytest.raises(ValueError, match="expects inputs of width 4"):
        Delta.local_weight(4, 3, site="s")(torch.zeros(2, 5))


def test_add_scaled_is_exact_where_scale_is_zero() -> None:
    y = torch.tensor([[[-0.0, 1.0], [2.0, -3.0]]])
    c = torch.tensor([[[float("inf"), 1.0], [float("nan"), 1.0]]])
    out = add_scaled(y, c, torch.zeros(1, 2))
    assert torch.equal(out, y) and torch.signbit(out[0, 0, 0])
    assert add_scaled(y, c, 0.0) is y
    scale = torch.tensor([[0.0, 2.0]])
    out = add_scaled(y, torch.ones_like(y), scale)
    assert torch.equal(out[0, 0], y[0, 0])
    assert torch.equal(out[0, 1], torch.tensor([4.0, -1.0]))


def test_add_scaled_keeps_dtype_and_sums_in_float32() -> None:
    y = torch.full((1, 1, 3), 256.0, dtype=torch.bfloat16)
    c = torch.full((1, 1, 3), 0.75)
    out = add_scaled(y, c, 2.0)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, (y.float() + 1.5).to(torch.bfloat16))
