"""Making a delta for a model: resolve the site, size the parameters, record the fingerprint."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from unisteer.core.delta import Delta, Kind
from unisteer.core.fingerprint import model_fingerprint
from unisteer.core.sites import resolve_site


def new_delta(
    model: nn.Module,
    kind: Kind,
    layer: int,
    *,
    site: str | None = None,
    rank: int = 4,
    tokenizer: Any | None = None,
    init_std: float = 0.0,
    seed: int | None = None,
    meta: dict[str, Any] | None = None,
    per_expert: bool = True,
) -> Delta:
    """A zero (or, for LoRA, B = 0) delta of ``kind`` at ``layer`` of ``model``.

    ``site`` overrides the default site (see :func:`unisteer.sites.resolve_site`). A vector
    placed on a linear site is a bias on that map's output. ``init_std`` draws a vector from
    N(0, init_std²); ``seed`` makes random starts reproducible. At a mixture of experts' fused
    projection (``site="model.layers.{L}.mlp.experts.down_proj"``), ``lora`` and
    ``local_weight`` get one ΔW per expert, or one shared by all with ``per_expert=False``.
    """
    s = resolve_site(model, kind, layer, site)
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    common: dict[str, Any] = {
        "site": s.path,
        "layer": s.layer,
        "meta": meta,
        "fingerprint": model_fingerprint(model, tokenizer),
    }
    if s.kind == "experts":
        common.update(site_kind="experts", experts=s.experts, per_expert=per_expert)
    if kind == "vector":
        return Delta.vector(
            s.d_out, d_in=s.d_in, site_kind=s.kind, init_std=init_std, generator=gen, **common
        )
    if kind == "lora":
        return Delta.lora(s.d_in, s.d_out, rank, generator=gen, **common)
    return Delta.local_weight(s.d_in, s.d_out, **common)
