"""Which tokens get which multiplier: by hand and as properties over random layouts."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unisteer import SteeringError
from unisteer.core.positions import token_scale


def test_modes_by_hand() -> None:
    cols = torch.arange(5)
    p = torch.tensor([2, 4])
    assert token_scale(3.0, "all", cols, 2, None) == 3.0
    prompt = token_scale(3.0, "prompt", cols, 2, p)
    assert torch.equal(prompt, torch.tensor([[3.0, 3, 0, 0, 0], [3, 3, 3, 3, 0]]))
    completion = token_scale(3.0, "completion", cols, 2, p)
    assert torch.equal(completion, torch.tensor([[0.0, 0, 3, 3, 3], [0, 0, 0, 0, 3]]))
    rows = token_scale(torch.tensor([1.0, -2.0]), "completion", cols, 2, 3)
    assert torch.equal(rows, torch.tensor([[0.0, 0, 0, 1, 1], [0, 0, 0, -2, -2]]))
    # A decode step at column 7 reads column 7 of per-token tensors.
    m = torch.arange(16.0).reshape(2, 8)
    assert torch.equal(
        token_scale(m, "all", torch.tensor([7]), 2, None), torch.tensor([[7.0], [15.0]])
    )


def test_errors_name_the_problem() -> None:
    cols = torch.arange(3)
    with pytest.raises(SteeringError, match="needs a prompt length"):
        token_scale(1.0, "prompt", cols, 2, None)
    with pytest.raises(SteeringError, match="prompt_length has 3 entries"):
        token_scale(1.0, "prompt", cols, 2, torch.tensor([1, 2, 3]))
    with pytest.raises(SteeringError, match="the position mask has 1 rows"):
        token_scale(1.0, torch.ones(1, 3, dtype=torch.bool), cols, 2, None)


@settings(max_examples=80, deadline=None)
@given(
    batch=st.integers(1, 4),
    total=st.integers(1, 12),
    data=st.data(),
    mode=st.sampled_from(["all", "prompt", "completion", "mask"]),
    per=st.sampled_from(["scalar", "row", "token"]),
)
def test_chunked_calls_agree_with_one_call(
    batch: int, total: int, data: st.DataObject, mode: str, per: str
) -> None:
    """Prefill + decode steps see exactly the columns one full pass would see."""
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 1000)))
    prompt = torch.tensor(
        data.draw(st.lists(st.integers(0, total), min_size=batch, max_size=batch))
    )
    m: float | torch.Tensor = {
        "scalar": 1.5,
        "row": torch.randn(batch, generator=gen),
        "token": torch.randn(batch, total, generator=gen),
    }[per]
    positions = torch.rand(batch, total, generator=gen) > 0.5 if mode == "mask" else mode
    whole = token_scale(m, positions, torch.arange(total), batch, prompt)  # type: ignore[arg-type]
    cut = data.draw(st.integers(1, total))
    pieces = [torch.arange(0, cut)] + [torch.tensor([c]) for c in range(cut, total)]
    parts = []
    for cols in pieces:
        s = token_scale(m, positions, cols, batch, prompt)  # type: ignore[arg-type]
        parts.append(torch.full((batch, cols.numel()), s) if isinstance(s, float) else s)
    chunked = torch.cat(parts, dim=1)
    full = torch.full((batch, total), whole) if isinstance(whole, float) else whole
    assert torch.equal(chunked, full)
    # And the mask semantics themselves, cell by cell.
    base = {"scalar": torch.full((batch, total), 1.5), "row": None, "token": None}[per]
    if base is None:
        base = m[:, None].expand(batch, total) if per == "row" else m  # type: ignore[index,assignment]
    col = torch.arange(total)[None, :]
    if mode == "prompt":
        sel = col < prompt[:, None]
    elif mode == "completion":
        sel = col >= prompt[:, None]
    elif mode == "mask":
        sel = positions  # type: ignore[assignment]
    else:
        sel = torch.ones(batch, total, dtype=torch.bool)
    assert torch.equal(full, torch.where(sel, base, torch.zeros(())))  # type: ignore[arg-type]
