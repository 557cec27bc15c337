from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import unisteer
from unisteer import Delta

from tiny_models import EXPERTS, tiny_model

torch.set_num_threads(2)


def randomize(delta: Delta, seed: int = 0, scale: float = 1.0) -> Delta:
    """Fill a delta's parameters with random values so that it visibly changes outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in delta.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return delta


def make_delta(model: torch.nn.Module, kind: str, layer: int = 1, seed: int = 0) -> Delta:
    """A random delta of ``kind`` at its default site; on a mixture of experts (which has no
    default down projection), lora and local_weight go on the fused experts."""
    experts = EXPERTS.get(getattr(getattr(model, "config", None), "model_type", ""))
    site = experts if experts is not None and kind != "vector" else None
    d = unisteer.new_delta(model, kind, layer, rank=3, site=site)  # type: ignore[arg-type]
    scale = 1.0 if kind == "vector" else 0.3
    return randomize(d, seed, scale)


@pytest.fixture
def llama() -> torch.nn.Module:
    return tiny_model("llama")


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The public datasets beside the project (``../shared/data``); CI always has them."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is not present")
    return SHARED_DATA
