"""The affine delta: one type for steering vectors, LoRA and local weight updates.

Every intervention changes one affine map ``y = W x + b`` at one site into

    y' = (W + m·ΔW) x + (b + m·Δb)        i.e.        y' = y + m·(ΔW x + Δb)

| kind           | ΔW            | Δb  |
|----------------|---------------|-----|
| ``vector``     | 0             | v   |
| ``lora``       | B·A (rank r)  | 0   |
| ``local_weight`` | dense ΔW    | Δb  |

At a mixture of experts' fused down projection (site kind ``experts``: one 3-D parameter
``[E, d_out, d_in]`` for E experts) ``lora`` and ``local_weight`` carry one ΔW per expert
(``[E, d_out, d_in]``; LoRA ``B_e·A_e``), or one ΔW shared by every expert (``per_expert=False``),
and no Δb: routed expert e computes ``(W_e + m·ΔW_e) a_e``, experts not routed add nothing.

This module is pure math: it knows nothing of hooks, models or files. Each kind reports its
ΔW (:meth:`Delta.weight`) and Δb (:meth:`Delta.bias`); applying, merging and saving
(:func:`unisteer.core.io.save_delta`) all go through those two numbers, and
:meth:`Delta.forward` computes ``ΔW x + Δb`` (through the low-rank factors for LoRA, never
materialising B·A).
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

Kind = Literal["vector", "lora", "local_weight"]
SiteKind = Literal["residual", "linear", "experts"]
SITE_KINDS: tuple[str, ...] = get_args(SiteKind)
KINDS: tuple[str, ...] = get_args(Kind)

#: Names of the parameter tensors of each kind, as saved in ``delta.safetensors``.
PARAMETER_NAMES: dict[str, tuple[str, ...]] = {
    "vector": ("bias",),
    "lora": ("lora_A", "lora_B"),
    "local_weight": ("weight", "bias"),
}


class Delta(nn.Module):
    """An additive change ``m·(ΔW x + Δb)`` to the output of one site.

    Parameters are always float32, whatever the model's dtype; they are moved to the hooked
    module's device when applied. Build one with :meth:`vector`, :meth:`lora` or
    :meth:`local_weight`, or for a model with :func:`unisteer.new_delta`.

    Attributes:
        kind: ``"vector"``, ``"lora"`` or ``"local_weight"``.
        site: dotted path of the hooked module inside the model (e.g. ``"model.layers.3"``).
        site_kind: ``"residual"`` (output of a decoder block; bias only), ``"linear"`` or
            ``"experts"`` (a mixture of experts' fused down projection).
        layer: index of the decoder block the site belongs to, when known.
        d_in, d_out: input and output width of the affine map at the site.
        rank: LoRA rank (``None`` for other kinds).
        meta: free-form JSON-serialisable metadata (objective, hyper-parameters, m range...).
        fingerprint: fingerprint of the model the delta was made for (see
            :mod:`unisteer.fingerprint`), or ``None``.
        experts: number of experts E at an ``experts`` site (``None`` elsewhere).
        per_expert: at an ``experts`` site, whether each expert has its own ΔW (else one ΔW
            is shared by all).
    """

    # The parameters each kind has (see ``expected_shapes``), created in ``__init__``.
    bias_: nn.Parameter
    weight_: nn.Parameter
    lora_A: nn.Parameter
    lora_B: nn.Parameter

    def __init__(
        self,
        kind: Kind,
        d_in: int,
        d_out: int,
        *,
        site: str,
        site_kind: SiteKind = "linear",
        layer: int | None = None,
        rank: int | None = None,
        meta: dict[str, Any] | None = None,
        fingerprint: dict[str, Any] | None = None,
        experts: int | None = None,
        per_expert: bool = True,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if site_kind not in SITE_KINDS:
            raise ValueError(f"site_kind must be one of {SITE_KINDS}, got {site_kind!r}")
        if site_kind == "experts":
            if kind == "vector":
                raise ValueError(
                    "a 'vector' delta cannot sit on the fused experts (it would be routed); put "
                    "it on the block output, or on the shared expert's down projection"
                )
            if not isinstance(experts, int) or isinstance(experts, bool) or experts < 1:
                raise ValueError(f"an 'experts' site needs the number of experts, got {experts!r}")
        elif experts is not None:
            raise ValueError(f"experts applies to 'experts' sites only, not {site_kind!r}")
        if site_kind == "residual" and kind != "vector":
            raise ValueError(
                f"a {kind!r} delta needs a Linear site; a residual site (the output of a decoder "
                "block) has no weight, so only kind='vector' can be placed there"
            )
        if site_kind == "residual" and d_in != d_out:
            raise ValueError(f"a residual site has d_in == d_out, got {d_in} and {d_out}")
        if d_in <= 0 or d_out <= 0:
            raise ValueError(f"d_in and d_out must be positive, got {d_in} and {d_out}")
        if kind == "lora":
            if rank is None or rank <= 0:
                raise ValueError(f"a lora delta needs a positive rank, got {rank!r}")
        elif rank is not None:
            raise ValueError(f"rank applies to lora deltas only, got rank={rank} for {kind!r}")
        self.kind: Kind = kind
        self.d_in = d_in
        self.d_out = d_out
        self.site = site
        self.site_kind: SiteKind = site_kind
        self.layer = layer
        self.rank = rank
        self.meta: dict[str, Any] = dict(meta or {})
        self.fingerprint = fingerprint
        self.experts = experts
        self.per_expert = bool(per_expert) if site_kind == "experts" else False
        for name, shape in self.expected_shapes().items():
            attr = name if name.startswith("lora_") else f"{name}_"
            setattr(self, attr, nn.Parameter(torch.zeros(shape, dtype=torch.float32)))

    # -- constructors -------------------------------------------------------------------------

    @classmethod
    def vector(
        cls,
        d_model: int,
        *,
        site: str,
        site_kind: SiteKind = "residual",
        d_in: int | None = None,
        layer: int | None = None,
        init_std: float = 0.0,
        generator: torch.Generator | None = None,
        **kwargs: Any,
    ) -> Delta:
        """A steering vector v added to the site's output (Δb = v, ΔW = 0).

        ``init_std > 0`` draws v from N(0, init_std²) (the trainer's "small random" start).
        """
        d = cls(
            "vector",
            d_in if d_in is not None else d_model,
            d_model,
            site=site,
            site_kind=site_kind,
            layer=layer,
            **kwargs,
        )
        if init_std > 0:
            with torch.no_grad():
                d.bias_.normal_(0.0, init_std, generator=generator)
        return d

    @classmethod
    def lora(
        cls,
        d_in: int,
        d_out: int,
        rank: int,
        *,
        site: str,
        layer: int | None = None,
        generator: torch.Generator | None = None,
        **kwargs: Any,
    ) -> Delta:
        """A rank-r update ΔW = B·A with A Kaiming-uniform and B = 0, so ΔW starts at 0."""
        d = cls("lora", d_in, d_out, site=site, layer=layer, rank=rank, **kwargs)
        # kaiming_uniform_(a=sqrt(5)) on each [rank, d_in] matrix (one per expert, at experts)
        bound = 1.0 / math.sqrt(d_in)
        with torch.no_grad():
            d.lora_A.uniform_(-bound, bound, generator=generator)
        return d

    @classmethod
    def local_weight(
        cls, d_in: int, d_out: int, *, site: str, layer: int | None = None, **kwargs: Any
    ) -> Delta:
        """A dense update (ΔW, Δb), both starting at zero."""
        return cls("local_weight", d_in, d_out, site=site, layer=layer, **kwargs)

    # -- the two numbers every kind reports ---------------------------------------------------

    def weight(self) -> Tensor | None:
        """ΔW as a dense ``[d_out, d_in]`` matrix (``[E, d_out, d_in]``, one per expert, at an
        ``experts`` site with ``per_expert``), or ``None`` when the kind has no ΔW."""
        if self.kind == "lora":
            return self.lora_B @ self.lora_A
        if self.kind == "local_weight":
            return self.weight_
        return None

    def bias(self) -> Tensor | None:
        """Δb as a ``[d_out]`` vector, or ``None`` when the kind has no Δb."""
        if self.kind in ("vector", "local_weight") and self.site_kind != "experts":
            return self.bias_
        return None

    def forward(self, x: Tensor) -> Tensor:
        """``ΔW x + Δb`` for inputs ``x[..., d_in]``, in float32, on ``x``'s device.

        For a vector the result does not depend on ``x``'s values; it is Δb broadcast to
        ``x.shape[:-1] + (d_out,)``.
        """
        if self.site_kind == "experts":
            raise ValueError(
                f"the delta at {self.site!r} acts inside the experts (ΔW x depends on which "
                "expert a token is routed to): apply it with unisteer.steer"
            )
        if x.shape[-1] != self.d_in:
            raise ValueError(
                f"delta at {self.site!r} expects inputs of width {self.d_in}, got {x.shape[-1]}"
            )
        dev = x.device
        if self.kind == "vector":
            return self.bias_.to(dev).expand(*x.shape[:-1], self.d_out)
        xf = x.to(torch.float32)
        if self.kind == "lora":
            return (xf @ self.lora_A.to(dev).T) @ self.lora_B.to(dev).T
        return torch.nn.functional.linear(xf, self.weight_.to(dev), self.bias_.to(dev))

    def null(self, y: Tensor) -> Tensor:
        """The "null" intervention's contribution for outputs ``y[..., d_out]`` (vector only):
        ``-ReLU(y·v)/‖v‖² · v``, which removes the positive component of ``y`` along ``v``
        (RePS's Φ⁻). In float32; zero where ``y·v <= 0``.
        """
        if self.kind != "vector":
            raise ValueError(
                f"the null intervention is defined for vector deltas; a {self.kind!r} delta is "
                "nulled with a negative multiplier instead"
            )
        v = self.bias_.to(y.device)
        yf = y.to(torch.float32)
        coef = torch.relu(yf @ v) / (v @ v).clamp_min(torch.finfo(torch.float32).tiny)
        return -coef.unsqueeze(-1) * v

    # -- helpers ------------------------------------------------------------------------------

    def tensors(self) -> dict[str, Tensor]:
        """The parameter tensors under their saved names (see ``PARAMETER_NAMES``; an
        ``experts`` site has no bias)."""
        return {
            name: getattr(self, name if name.startswith("lora_") else f"{name}_")
            for name in self.expected_shapes()
        }

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape each saved tensor must have, from ``kind``, ``d_in``, ``d_out``, ``rank``
        (with a leading number of experts for a per-expert delta)."""
        lead: tuple[int, ...] = (
            (self.experts,) if self.experts is not None and self.per_expert else ()
        )
        if self.kind == "vector":
            return {"bias": (self.d_out,)}
        if self.kind == "lora":
            assert self.rank is not None
            return {
                "lora_A": (*lead, self.rank, self.d_in),
                "lora_B": (*lead, self.d_out, self.rank),
            }
        if self.site_kind == "experts":
            return {"weight": (*lead, self.d_out, self.d_in)}
        return {"weight": (self.d_out, self.d_in), "bias": (self.d_out,)}

    def load_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Copy saved tensors into the parameters (shapes must match exactly)."""
        own = self.tensors()
        with torch.no_grad():
            for name, param in own.items():
                param.copy_(tensors[name].to(torch.float32))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        r = f", rank={self.rank}" if self.rank is not None else ""
        if self.experts is not None:
            r += f", experts={self.experts}" + ("" if self.per_expert else " (shared)")
        return (
            f"kind={self.kind!r}, site={self.site!r} ({self.site_kind}), "
            f"d_in={self.d_in}, d_out={self.d_out}{r}"
        )


def add_scaled(y: Tensor, contribution: Tensor, scale: float | Tensor) -> Tensor:
    """``y + scale·contribution``, exact where the scale is zero.

    ``scale`` is a Python float or a tensor broadcastable to ``y.shape[:-1]`` (one number per
    token). Where it is zero the result is ``y`` itself, bit for bit (``y + 0·c`` would turn
    ``-0.0`` into ``0.0`` and propagate a non-finite ``c``). The sum is formed in float32 and
    cast back to ``y``'s dtype.
    """
    if isinstance(scale, float | int):
        if scale == 0:
            return y
        out = y.to(torch.float32) + float(scale) * contribution
        return out.to(y.dtype)
    s = scale.to(device=y.device, dtype=torch.float32).unsqueeze(-1)
    out = (y.to(torch.float32) + s * contribution).to(y.dtype)
    return torch.where(s != 0, out, y)
