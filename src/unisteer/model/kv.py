"""One KV cache for the rows of a batch that changes between decoding steps: rows join
(left-padded to the batch's width), leave, or are repeated (the server's requests,
:mod:`unisteer.serve.engine`; a controller's candidate rows, :mod:`unisteer.control`).

A row is prefilled alone (so its prompt's keys and values are those of the request run alone)
and then merged into the batch: the shorter side is padded on the left with zero keys and
values that the attention mask hides. When rows leave, the rest are kept and the columns that
are padding in every remaining row are dropped. Only plain growing layers (transformers'
``DynamicLayer``: keys and values ``[batch, heads, columns, dim]``) can be merged like this;
:func:`mergeable` says whether a model's cache is made of them, and the engine serves one
request at a time when it is not (sliding windows, linear-attention or quantised layers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers.cache_utils import DynamicCache, DynamicLayer


def mergeable(cache: object) -> bool:
    """Whether ``cache`` is a ``DynamicCache`` of plain ``DynamicLayer`` layers, all filled."""
    layers = getattr(cache, "layers", None)
    return (
        isinstance(cache, DynamicCache)
        and bool(layers)
        and all(type(layer) is DynamicLayer and layer.is_initialized for layer in layers or [])
    )


def _kv(layer: object) -> tuple[Tensor, Tensor]:
    """The keys and values of a filled ``DynamicLayer``."""
    keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
    if not isinstance(keys, Tensor) or not isinstance(values, Tensor):
        raise TypeError(f"a {type(layer).__name__} holds no keys and values to merge")
    return keys, values


def _left_pad(t: Tensor, width: int) -> Tensor:
    """``t`` (``[..., columns, dim]`` or ``[rows, columns]``) padded with zeros on the left of
    its column axis to ``width`` columns."""
    axis = -2 if t.dim() == 4 else -1
    missing = width - t.shape[axis]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[axis] = missing
    return torch.cat([t.new_zeros(shape), t], dim=axis)


@dataclass
class BatchCache:
    """The cache and attention mask (``[rows, columns]``, 1 on real tokens) of the batch's rows,
    and how many real tokens each row has (its next position)."""

    cache: DynamicCache
    mask: Tensor
    lengths: Tensor

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])

    @classmethod
    def single(cls, cache: DynamicCache, length: int) -> BatchCache:
        """A batch of one row whose cache holds ``length`` real tokens and no padding."""
        device = _kv(cache.layers[0])[0].device
        return cls(
            cache,
            torch.ones((1, length), dtype=torch.long, device=device),
            torch.tensor([length], device=device),
        )

    def join(self, other: BatchCache) -> BatchCache:
        """The rows of ``self`` then those of ``other``, left-padded to a common width."""
        width = max(self.width, other.width)
        layers = []
        for a, b in zip(self.cache.layers, other.cache.layers, strict=True):
            (ka, va), (kb, vb) = _kv(a), _kv(b)
            keys = torch.cat([_left_pad(ka, width), _left_pad(kb, width)], dim=0)
            values = torch.cat([_left_pad(va, width), _left_pad(vb, width)], dim=0)
            layers.append((keys, values))
        mask = torch.cat([_left_pad(self.mask, width), _left_pad(other.mask, width)], dim=0)
        return BatchCache(DynamicCache(layers), mask, torch.cat([self.lengths, other.lengths]))

    def keep(self, rows: Sequence[int]) -> BatchCache:
        """Only ``rows`` (in that order), without the columns that are padding in all of them."""
        index = torch.tensor(list(rows), dtype=torch.long, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        used = mask.any(0).nonzero()
        start = int(used[0]) if used.numel() else mask.shape[1]
        layers = []
        for layer in self.cache.layers:
            keys, values = _kv(layer)
            layers.append(
                (keys.index_select(0, index)[..., start:, :],
                 values.index_select(0, index)[..., start:, :])
            )  # fmt: skip
        lengths = self.lengths.index_select(0, index)
        return BatchCache(DynamicCache(layers), mask[:, start:], lengths)

    def grow(self) -> None:
        """Record one more real token in every row (after a decoding step wrote its column)."""
        ones = torch.ones((self.rows, 1), dtype=self.mask.dtype, device=self.mask.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        self.lengths = self.lengths + 1
