"""Sites are found by structure on every architecture; overrides work; errors list candidates."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import unisteer
from unisteer import SiteError
from unisteer.core.sites import candidate_sites, find_blocks, resolve_site

from tiny_models import (
    BLOCKS,
    DENSE,
    DOWN_PROJ,
    EXPERTS,
    HIDDEN,
    LAYERS,
    MOE,
    SHARED_EXPERT,
    tiny_model,
)


@pytest.mark.parametrize("arch", DENSE)
def test_blocks_and_down_proj_found_by_structure(arch: str) -> None:
    model = tiny_model(arch)
    path, blocks = find_blocks(model)
    assert path == BLOCKS.get(arch, "model.layers")
    assert len(blocks) == LAYERS
    for layer in range(LAYERS):
        site = unisteer.down_proj_site(model, layer)
        assert site.path == DOWN_PROJ[arch].format(L=layer)
        assert site.kind == "linear" and site.d_out == HIDDEN and site.layer == layer
        res = unisteer.residual_site(model, layer)
        assert res.path == f"{path}.{layer}"
        assert (res.d_in, res.d_out) == (HIDDEN, HIDDEN)


@pytest.mark.parametrize("arch", DENSE)
def test_default_sites_per_kind_and_override(arch: str) -> None:
    model = tiny_model(arch)
    assert resolve_site(model, "vector", 1).kind == "residual"
    for kind in ("lora", "local_weight"):
        assert resolve_site(model, kind, 1).path == DOWN_PROJ[arch].format(L=1)  # type: ignore[arg-type]
    over = resolve_site(model, "lora", 3, site=DOWN_PROJ[arch])
    assert over.path == DOWN_PROJ[arch].format(L=3)
    block = BLOCKS.get(arch, "model.layers") + ".{L}"
    assert resolve_site(model, "vector", 2, site=block).kind == "residual"
    # A vector may also sit on a linear map, as a bias on its output.
    vec = unisteer.new_delta(model, "vector", 0, site=DOWN_PROJ[arch])
    assert vec.site_kind == "linear" and vec.d_out == HIDDEN


@pytest.mark.parametrize("arch", MOE)
def test_mixture_of_experts_sites_are_listed_never_guessed(arch: str) -> None:
    """No default down projection on a mixture of experts: one error listing the real
    candidates with the exact strings to pass, never an attention projection."""
    model = tiny_model(arch)
    for kind in ("lora", "local_weight"):
        with pytest.raises(SiteError) as err:
            resolve_site(model, kind, 1)  # type: ignore[arg-type]
        msg = str(err.value)
        assert "mixture of experts" in msg and EXPERTS[arch] in msg
        assert "model.layers.{L} (the block output; vector only)" in msg
        assert "self_attn" not in msg
        if arch in SHARED_EXPERT:
            assert SHARED_EXPERT[arch] in msg
    assert resolve_site(model, "vector", 1).kind == "residual"
    site = resolve_site(model, "lora", 2, site=EXPERTS[arch])
    assert site.kind == "experts" and site.path == EXPERTS[arch].format(L=2)
    assert site.experts == 4 and site.d_out == HIDDEN and site.layer == 2
    with pytest.raises(SiteError, match="only lora and local_weight"):
        resolve_site(model, "vector", 1, site=EXPERTS[arch])
    gate_up = EXPERTS[arch].replace("down_proj", "gate_up_proj")
    with pytest.raises(SiteError, match="not the experts' down projection"):
        resolve_site(model, "lora", 1, site=gate_up)
    if arch in SHARED_EXPERT:
        shared = resolve_site(model, "lora", 1, site=SHARED_EXPERT[arch])
        assert shared.kind == "linear" and shared.d_out == HIDDEN


def test_gpt2_conv1d_dims_are_read_transposed() -> None:
    model = tiny_model("gpt2")
    site = unisteer.down_proj_site(model, 0)
    assert (site.d_in, site.d_out) == (4 * HIDDEN, HIDDEN)


def test_bad_override_lists_candidates() -> None:
    model = tiny_model("llama")
    with pytest.raises(SiteError) as err:
        resolve_site(model, "lora", 1, site="model.layers.{L}.mlp.down")
    msg = str(err.value)
    assert "does not exist" in msg and "model.layers.1.mlp.down_proj [80->32]" in msg
    with pytest.raises(SiteError, match="only a 'vector' delta"):
        resolve_site(model, "lora", 1, site="model.layers.{L}")
    with pytest.raises(SiteError, match="neither a linear map nor a decoder block"):
        resolve_site(model, "vector", 1, site="model.layers.{L}.mlp.act_fn")
    with pytest.raises(SiteError, match="out of range"):
        resolve_site(model, "vector", LAYERS)
    with pytest.raises(SiteError, match="not counted from the end"):
        resolve_site(model, "vector", -1)


class _Expert(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(8, 16)
        self.down = nn.Linear(16, 8)


class _MoEBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.Linear(8, 8)
        self.experts = nn.ModuleList([_Expert(), _Expert()])


class _MoEModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.layers = nn.ModuleList([_MoEBlock() for _ in range(3)])


def test_mixture_of_experts_needs_an_explicit_site() -> None:
    model = _MoEModel()
    path, blocks = find_blocks(model)
    assert path == "layers" and len(blocks) == 3
    with pytest.raises(SiteError) as err:
        unisteer.down_proj_site(model, 0)
    msg = str(err.value)
    assert "layers.{L}.experts.0.down" in msg and "layers.{L}.experts.1.down" in msg
    assert "layers.{L} (the block output; vector only)" in msg
    site = resolve_site(model, "lora", 0, site="layers.{L}.experts.1.down")
    assert (site.d_in, site.d_out) == (16, 8)


def test_model_without_blocks_gets_one_clear_error() -> None:
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8))
    with pytest.raises(SiteError, match=r"found no list of decoder blocks.*Name the site"):
        unisteer.residual_site(model, 0)
    assert any("1 [8->8]" in c for c in candidate_sites(model))
    lin = resolve_site(model, "local_weight", 0, site="1")
    assert lin.kind == "linear"


def test_find_blocks_prefers_config_layer_count() -> None:
    model = tiny_model("llama")
    model.extra = nn.ModuleList([nn.Linear(HIDDEN, HIDDEN) for _ in range(LAYERS + 3)])
    torch.nn.init.zeros_(model.extra[0].weight)
    assert find_blocks(model)[0] == "model.layers"
