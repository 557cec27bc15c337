"""Finding where a delta goes, by the structure of the model and never by its name.

Three kinds of site exist:

* ``residual``: the output of decoder block L (the residual stream after the block). Only a
  ``vector`` delta (bias only) can go there.
* ``linear``: any ``nn.Linear`` (or GPT-2's ``Conv1D``, the same affine map with its weight
  stored transposed). Every kind can go there; x is the module's input.
* ``experts``: a mixture of experts' fused down projection, a 3-D parameter ``[E, d_out,
  d_in]`` of the module that runs the routed experts (transformers 5 fuses them:
  ``MixtralExperts``, ``Qwen2MoeExperts``...), named by its dotted path
  (``"model.layers.{L}.mlp.experts.down_proj"``). ``lora`` and ``local_weight`` go there,
  with one ΔW per expert (see :mod:`unisteer.core.delta`). The parameter must be the one the
  experts' output is linear in (their last projection), and it must write the model width.

The decoder blocks are the ``nn.ModuleList`` whose entries all have the same type and contain
linear maps, preferring the one whose length equals the config's number of layers. The MLP
down-projection of a block is the linear map inside it that writes the model width and reads
the widest input, wider than the model (the MLP's inner width is larger than the attention's
output on every dense causal LM we know of; when several maps tie, or the widest reads no
more than the model width and so cannot be told from an attention projection, we refuse and
list them). A block holding experts (a 3-D parameter writing the model width, or a list of
identical expert modules) is a mixture of experts and has no default down projection: the
error lists the real candidates (the experts, the shared expert, the block output).

A site can always be named explicitly with a dotted path, where ``{L}`` stands for the layer:
``"model.layers.{L}.mlp.down_proj"``.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    experts: int | None = None  # the number of experts at an ``experts`` site


def linear_dims(module: nn.Module) -> tuple[int, int] | None:
    """``(d_in, d_out)`` of an affine map (``nn.Linear`` or ``Conv1D``), else ``None``."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        d_in, d_out = module.weight.shape  # Conv1D stores W as [in, out]
        return int(d_in), int(d_out)
    return None


def expert_dims(module: nn.Module, name: str) -> tuple[int, int, int] | None:
    """``(E, d_in, d_out)`` of the fused expert projection ``name`` of ``module`` (a 3-D
    parameter; ``[E, d_out, d_in]`` as ``F.linear`` reads it, or ``[E, d_in, d_out]`` when the
    module says ``is_transposed``), else ``None``."""
    p = module._parameters.get(name)
    if p is None or p.dim() != 3:
        return None
    e, a, b = (int(x) for x in p.shape)
    return (e, a, b) if experts_transposed(module) else (e, b, a)


def experts_transposed(module: nn.Module) -> bool:
    """Whether a fused-experts module stores its projections as ``[E, d_in, d_out]`` (the
    ``is_transposed`` flag transformers' experts modules carry; ``F.linear``'s layout
    otherwise)."""
    return bool(getattr(module, "is_transposed", False))


def split_param_path(path: str) -> tuple[str, str]:
    """``"a.b.experts.down_proj"`` → ``("a.b.experts", "down_proj")``."""
    parent, _, name = path.rpartition(".")
    return parent, name


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


def replay_start(model: nn.Module, deltas: Sequence[Delta]) -> tuple[int, str | None]:
    """Where a replay of ``deltas`` begins: the lowest block holding one of them, and that
    block's path when every delta in it sits on its output (a residual site with a block after
    it; the replay then starts at the next block, with those deltas applied to its input),
    else ``None``."""
    if not deltas:
        raise SiteError("no deltas to replay")
    layer = min(block_index_of(model, d.site) for d in deltas)
    first = [d for d in deltas if block_index_of(model, d.site) == layer]
    if all(site_is_block_output(model, d) for d in first):
        return layer, first[0].site
    return layer, None


def _layer_index(blocks: nn.ModuleList, layer: int, path: str) -> int:
    n = len(blocks)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n:
        raise SiteError(
            f"layer {layer!r} is out of range: {path} has {n} blocks, numbered 0..{n - 1} "
            "(negative layers are not counted from the end)"
        )
    return layer


def residual_site(model: nn.Module, layer: int) -> Site:
    """The output of decoder block ``layer`` (0-based)."""
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
    moe = moe_candidates(model, i)
    if moe:
        raise SiteError(
            f"block {block_path} is a mixture of experts: it has no single MLP "
            "down-projection. Name the site (the strings to pass as site=..., {L} is the "
            "layer): " + "; ".join(moe)
        )
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
    if len(best) > 1 or widest <= d_model:
        why = (
            "several equally likely MLP down-projections"
            if len(best) > 1
            else f"no linear map reading more than the model width {d_model}, so its MLP "
            "down-projection cannot be told from an attention projection"
        )
        raise SiteError(
            f"block {block_path} has {why}: " + _list_candidates(block_path, best) + ". "
            + _HOW_TO_NAME
        )  # fmt: skip
    name, (d_in, d_out) = best[0]
    return Site(path=f"{block_path}.{name}", kind="linear", layer=i, d_in=d_in, d_out=d_out)


def moe_candidates(model: nn.Module, layer: int) -> list[str]:
    """For a mixture-of-experts block, the sites to name (with ``{L}`` for the layer): the
    fused experts' down projection, the shared expert's down projection, the block output.
    Empty for a dense block. Experts are found by structure: a 3-D parameter writing the model
    width, or a ``ModuleList`` of identical modules holding linear maps inside the block."""
    path, blocks = find_blocks(model)
    block = blocks[layer]
    d_model = hidden_size(model)
    template = f"{path}.{{L}}" if path else "{L}"
    fused: list[tuple[str, str, tuple[int, int, int]]] = []  # (owner, param, dims)
    listed: list[str] = []  # owners of expert lists
    for name, module in block.named_modules():
        for pname in module._parameters:
            dims = expert_dims(module, pname)
            if dims is not None and dims[2] == d_model and dims[1] != d_model:
                fused.append((name, pname, dims))
        if (
            isinstance(module, nn.ModuleList)
            and len(module) > 1
            and len({type(c) for c in module}) == 1
            and all(_contains_linear(c) for c in module)
        ):
            listed.append(name)
    if not fused and not listed:
        return []
    out: list[str] = []
    owners = []
    for owner, pname, (e, d_in, d_out) in fused:
        out.append(
            f"{template}.{owner}.{pname} (the {e} routed experts' down projection, "
            f"[{e} x {d_in}->{d_out}]; lora or local_weight, one delta per expert)"
        )
        owners.append(owner)
    for owner in listed:
        experts = list(block.get_submodule(owner).children())
        for i, expert in enumerate(experts):
            if i == 4:
                out.append(f"... ({len(experts)} experts in {template}.{owner})")
                break
            for name, module in expert.named_modules():
                io = linear_dims(module)
                if io is not None and io[1] == d_model:
                    out.append(
                        f"{template}.{owner}.{i}.{name} (expert {i}'s linear map "
                        f"[{io[0]}->{io[1]}])"
                    )
        owners.append(owner)
    # The shared expert: linear maps writing the model width inside the module that holds the
    # experts (the sparse MLP), outside the experts themselves.
    for owner in owners:
        moe_block = owner.rpartition(".")[0]
        holder = block.get_submodule(moe_block) if moe_block else block
        prefix = f"{moe_block}." if moe_block else ""
        for name, module in holder.named_modules():
            io = linear_dims(module)
            full = f"{prefix}{name}"
            if (
                io is not None
                and io[1] == d_model
                and io[0] != d_model
                and not full.startswith(f"{owner}.")
            ):
                out.append(
                    f"{template}.{full} (a shared expert's down projection [{io[0]}->{io[1]}])"
                )
    out.append(f"{template} (the block output; vector only)")
    return out


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
        for pname in m._parameters:
            e = expert_dims(m, pname)
            if e is not None:
                out.append(f"{block_path}.{name}.{pname} [{e[0]} experts x {e[1]}->{e[2]}]")
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
    experts = _experts_site(model, path, kind, layer)
    if experts is not None:
        return experts
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


def _experts_site(model: nn.Module, path: str, kind: Kind, layer: int | None) -> Site | None:
    """The ``experts`` site at ``path`` when it names a fused expert projection, else None."""
    parent, name = split_param_path(path)
    try:
        module = model.get_submodule(parent)
    except AttributeError:
        return None
    dims = expert_dims(module, name)
    if dims is None:
        return None
    e, d_in, d_out = dims
    if kind == "vector":
        raise SiteError(
            f"site {path!r} is the fused experts' projection, where only lora and local_weight "
            "deltas go (one per expert); put a vector on the block output or on a shared "
            "expert. Candidates: " + "; ".join(candidate_sites(model, layer))
        )
    width = hidden_size(model)
    if d_out != width:
        raise SiteError(
            f"site {path!r} writes width {d_out}, not the model width {width}: it is not the "
            "experts' down projection. Candidates: " + "; ".join(candidate_sites(model, layer))
        )
    return Site(path=path, kind="experts", layer=layer, d_in=d_in, d_out=d_out, experts=e)


def check_site(model: nn.Module, delta: Delta) -> nn.Module:
    """The module at the delta's site, after checking that the delta fits it (for an
    ``experts`` site: the experts module that owns the projection)."""
    if delta.site_kind == "experts":
        parent, name = split_param_path(delta.site)
        try:
            owner = model.get_submodule(parent)
        except AttributeError:
            owner = None
        e_dims = None if owner is None else expert_dims(owner, name)
        if owner is None or e_dims is None:
            raise SiteError(
                f"the delta's site {delta.site!r} is not a fused expert projection in "
                f"{type(model).__name__}. Candidates: "
                + "; ".join(candidate_sites(model, delta.layer))
            )
        want = (delta.experts, delta.d_in, delta.d_out)
        if e_dims != want:
            raise SiteError(
                f"the delta expects {want[0]} experts of {want[1]}->{want[2]} at "
                f"{delta.site!r}, but the model has {e_dims[0]} of {e_dims[1]}->{e_dims[2]} "
                "there"
            )
        return owner
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
