"""Finding where a delta goes, by the structure of the model and never by its name.

Two kinds of site exist:

* ``residual``: the output of decoder block L (the residual stream after the block). Only a
  ``vector`` delta (bias only) can go there.
* ``linear``: any ``nn.Linear`` (or GPT-2's ``Conv1D``, the same affine map with its weight
  stored transposed). Every kind can go there; x is the module's input.

The decoder blocks are the ``nn.ModuleList`` whose entries all have the same type and contain
linear maps, preferring the one whose length equals the config's number of layers. The MLP
down-projection of a block is the linear map inside it that writes the model width and reads
the widest input (the MLP's inner width is larger than the attention's output on every causal
LM we know of; when several maps tie, e.g. mixture-of-experts, we refuse and list them).

A site can always be named explicitly with a dotted path, where ``{L}`` stands for the layer:
``"model.layers.{L}.mlp.down_proj"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn
from transformers.pytorch_utils import Conv1D

from unisteer.core.delta import Kind, SiteKind
from unisteer.errors import SiteError
from unisteer.model.config import config_hidden_size, num_layers

if TYPE_CHECKING:
    from unisteer.core.delta import Delta

_HOW_TO_NAME = (
    'Name the site explicitly, e.g. site="model.layers.{L}" for a block output or '
    'site="model.layers.{L}.mlp.down_proj" for a linear map ({L} is replaced by the layer).'
)


@dataclass(frozen=True)
class Site:
    """A resolved place in a model where a delta is added."""

    path: str
    kind: SiteKind
    layer: int | None
    d_in: int
    d_out: int


def linear_dims(module: nn.Module) -> tuple[int, int] | None:
    """``(d_in, d_out)`` of an affine map (``nn.Linear`` or ``Conv1D``), else ``None``."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        d_in, d_out = module.weight.shape  # Conv1D stores W as [in, out]
        return int(d_in), int(d_out)
    return None


def hidden_size(model: nn.Module) -> int:
    """The width of the residual stream."""
    h = config_hidden_size(model)
    if h is not None:
        return h
    get_emb = getattr(model, "get_input_embeddings", None)
    emb = get_emb() if callable(get_emb) else None
    if not isinstance(emb, nn.Embedding):
        emb = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    if isinstance(emb, nn.Embedding):
        return emb.embedding_dim
    raise SiteError(
        f"cannot tell the residual width of {type(model).__name__}: its config has no "
        "hidden_size and it has no input embedding. " + _HOW_TO_NAME
    )


def _contains_linear(module: nn.Module) -> bool:
    return any(linear_dims(m) is not None for m in module.modules())


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The dotted path and the ``ModuleList`` of the model's decoder blocks."""
    candidates: list[tuple[str, nn.ModuleList]] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        kinds = {type(child) for child in module}
        if len(kinds) == 1 and all(_contains_linear(child) for child in module):
            candidates.append((name, module))
    if not candidates:
        raise SiteError(
            f"found no list of decoder blocks in {type(model).__name__} (no nn.ModuleList of "
            "identical modules containing linear layers). " + _HOW_TO_NAME
        )
    n_layers = num_layers(model)
    exact = [c for c in candidates if n_layers is not None and len(c[1]) == n_layers]
    pool = exact or candidates

    def size(c: tuple[str, nn.ModuleList]) -> int:
        return sum(p.numel() for p in c[1].parameters())

    return max(pool, key=size)


def middle_layer(model: nn.Module) -> int:
    """The index of the middle decoder block (the paper's default layer)."""
    return len(find_blocks(model)[1]) // 2


def block_index_of(model: nn.Module, site: str) -> int:
    """Which decoder block contains the module at ``site``."""
    path, blocks = find_blocks(model)
    prefix = f"{path}." if path else ""
    if site.startswith(prefix):
        head = site[len(prefix) :].split(".", 1)[0]
        if head.isdigit() and int(head) < len(blocks):
            return int(head)
    raise SiteError(f"the site {site!r} is not inside a decoder block ({path}.N)")


def site_is_block_output(model: nn.Module, delta: Delta) -> bool:
    """Whether the delta acts on a decoder block's output (a residual site) and a block follows
    it: then the block itself does not depend on m, and a replay can start at the next one."""
    path, blocks = find_blocks(model)
    index = block_index_of(model, delta.site)
    prefix = f"{path}." if path else ""
    return (
        delta.site_kind == "residual"
        and delta.site == f"{prefix}{index}"
        and index + 1 < len(blocks)
    )


def _layer_index(blocks: nn.ModuleList, layer: int, path: str) -> int:
    n = len(blocks)
    if not -n <= layer < n:
        raise SiteError(f"layer {layer} is out of range: {path} has {n} blocks (0..{n - 1})")
    return layer % n


def residual_site(model: nn.Module, layer: int) -> Site:
    """The output of decoder block ``layer`` (negative indices count from the end)."""
    path, blocks = find_blocks(model)
    i = _layer_index(blocks, layer, path)
    d = hidden_size(model)
    return Site(path=f"{path}.{i}" if path else str(i), kind="residual", layer=i, d_in=d, d_out=d)


def down_proj_site(model: nn.Module, layer: int) -> Site:
    """The MLP down-projection of decoder block ``layer``."""
    path, blocks = find_blocks(model)
    i = _layer_index(blocks, layer, path)
    block_path = f"{path}.{i}" if path else str(i)
    d_model = hidden_size(model)
    linears = [
        (name, dims)
        for name, module in blocks[i].named_modules()
        if (dims := linear_dims(module)) is not None
    ]
    writers = [(name, dims) for name, dims in linears if dims[1] == d_model]
    if not writers:
        raise SiteError(
            f"block {block_path} has no linear map writing width {d_model}; candidates: "
            + _list_candidates(block_path, linears)
            + ". "
            + _HOW_TO_NAME
        )
    widest = max(dims[0] for _, dims in writers)
    best = [(name, dims) for name, dims in writers if dims[0] == widest]
    if len(best) > 1:
        raise SiteError(
            f"block {block_path} has several equally likely MLP down-projections (a mixture of "
            "experts?): " + _list_candidates(block_path, best) + ". " + _HOW_TO_NAME
        )
    name, (d_in, d_out) = best[0]
    return Site(path=f"{block_path}.{name}", kind="linear", layer=i, d_in=d_in, d_out=d_out)


def _list_candidates(prefix: str, items: list[tuple[str, tuple[int, int]]]) -> str:
    if not items:
        return "(none)"
    return ", ".join(f"{prefix}.{name} [{a}->{b}]" for name, (a, b) in items)


def candidate_sites(model: nn.Module, layer: int | None = None) -> list[str]:
    """Human-readable list of valid site paths (block outputs and linear maps of one block)."""
    try:
        path, blocks = find_blocks(model)
    except SiteError:
        return [
            f"{name} [{d[0]}->{d[1]}]"
            for name, m in model.named_modules()
            if (d := linear_dims(m)) is not None
        ][:40]
    i = 0 if layer is None else layer % len(blocks)
    block_path = f"{path}.{i}" if path else str(i)
    out = [f"{block_path} (block output)"]
    for name, m in blocks[i].named_modules():
        d = linear_dims(m)
        if d is not None:
            out.append(f"{block_path}.{name} [{d[0]}->{d[1]}]")
    return out


def resolve_site(model: nn.Module, kind: Kind, layer: int, site: str | None = None) -> Site:
    """The site for a delta of ``kind`` at ``layer``.

    Defaults follow the paper: ``vector`` → the residual output of block ``layer``; ``lora``
    and ``local_weight`` → that block's MLP down-projection. ``site`` overrides with a dotted
    path (``{L}`` is replaced by ``layer``); it must name a decoder block or a linear map.
    """
    if site is None:
        return residual_site(model, layer) if kind == "vector" else down_proj_site(model, layer)
    return site_at_path(model, site.replace("{L}", str(layer)), kind, layer)


def site_at_path(model: nn.Module, path: str, kind: Kind, layer: int | None = None) -> Site:
    """Resolve an explicit dotted path, with an error listing candidates when it is wrong."""
    try:
        module = model.get_submodule(path)
    except AttributeError:
        raise SiteError(
            f"site {path!r} does not exist in {type(model).__name__}. Candidates: "
            + "; ".join(candidate_sites(model, layer))
        ) from None
    dims = linear_dims(module)
    if dims is not None:
        return Site(path=path, kind="linear", layer=layer, d_in=dims[0], d_out=dims[1])
    try:
        blocks_path, blocks = find_blocks(model)
    except SiteError:
        blocks_path, blocks = "", nn.ModuleList()
    for i, block in enumerate(blocks):
        if block is module:
            if kind != "vector":
                raise SiteError(
                    f"site {path!r} is a decoder block output, which only a 'vector' delta can "
                    f"use; a {kind!r} delta needs a linear map. Candidates: "
                    + "; ".join(candidate_sites(model, i))
                )
            d = hidden_size(model)
            return Site(path=path, kind="residual", layer=i, d_in=d, d_out=d)
    raise SiteError(
        f"site {path!r} is a {type(module).__name__}, neither a linear map nor a decoder block "
        f"(the blocks are {blocks_path or '(not found)'}.N). Candidates: "
        + "; ".join(candidate_sites(model, layer))
    )


def check_site(model: nn.Module, delta: Delta) -> nn.Module:
    """The module at the delta's site, after checking that the delta fits it."""
    try:
        module = model.get_submodule(delta.site)
    except AttributeError:
        raise SiteError(
            f"the delta's site {delta.site!r} does not exist in {type(model).__name__}. "
            "Candidates: " + "; ".join(candidate_sites(model, delta.layer))
        ) from None
    if delta.site_kind == "linear":
        dims = linear_dims(module)
        if dims is None:
            raise SiteError(
                f"the delta's site {delta.site!r} should be a linear map but is a "
                f"{type(module).__name__}"
            )
        if dims != (delta.d_in, delta.d_out):
            raise SiteError(
                f"the delta expects a {delta.d_in}->{delta.d_out} map at {delta.site!r}, but "
                f"the model has {dims[0]}->{dims[1]} there"
            )
    else:
        _, blocks = find_blocks(model)
        if not any(block is module for block in blocks):
            raise SiteError(f"the delta's site {delta.site!r} is not a decoder block")
        width = hidden_size(model)
        if width != delta.d_out:
            raise SiteError(
                f"the delta has width {delta.d_out} but the residual stream at {delta.site!r} "
                f"has width {width}"
            )
    return module
