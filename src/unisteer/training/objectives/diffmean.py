"""DiffMean: the closed-form steering vector (vector kind only).

    v = mean over pairs of ( mean_t h_t(A_p) - mean_t h_t(A_n) )

where h_t is the site's output (the residual stream after block L by default) at the
completion tokens t of each sequence. The default sweep grid is ±3·‖h‖/‖v‖ (‖h‖ the median
norm of the site's output over all tokens), so the largest push is three times the
activation's own size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from unisteer.core.create import new_delta
from unisteer.core.delta import Delta
from unisteer.core.steer import record_outputs
from unisteer.data.pairs import PolarityPair
from unisteer.data.tokens import encode_pairs, pad_id, pair_batch
from unisteer.model.config import context_length
from unisteer.model.memory import check_pairs_fit, on_model_device
from unisteer.scoring.grid import symmetric_grid


def diffmean(
    model: nn.Module,
    tokenizer: Any,
    pairs: Sequence[PolarityPair],
    *,
    layer: int,
    site: str | None = None,
    batch_size: int = 8,
    include_suffix: bool = False,
    system_prompt: str | None = None,
    grid_points: int = 21,
    progress: bool = False,
) -> Delta:
    """The DiffMean vector of ``pairs`` at ``layer`` (or ``site``), with its sweep grid in
    ``meta["grid"]`` and its natural unit ‖h‖/‖v‖ in ``meta["unit"]``."""
    if not pairs:
        raise ValueError("DiffMean needs at least one pair")
    delta = new_delta(model, "vector", layer, site=site, tokenizer=tokenizer)
    pad = pad_id(tokenizer)
    encoded = encode_pairs(
        tokenizer,
        pairs,
        include_suffix=include_suffix,
        system_prompt=system_prompt,
        max_tokens=context_length(model),
    )
    check_pairs_fit(model, pairs, encoded, "DiffMean's forward pass over")
    total = torch.zeros(delta.d_out, dtype=torch.float64)
    norms: list[torch.Tensor] = []
    starts = range(0, len(pairs), batch_size)
    for start in tqdm(starts, desc="diffmean", disable=not progress, unit="batch"):
        batch = pair_batch(encoded, range(start, min(start + batch_size, len(pairs))), pad)
        with torch.no_grad(), record_outputs(model, delta.site) as seen:
            model(
                **on_model_device(
                    model, {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
                )
            )
        # On the host, with the batch's masks (a dispatched model's site may be on a GPU).
        h = seen[0].to("cpu", torch.float64).reshape(*batch.input_ids.shape, -1)
        comp = batch.completion_mask.to(torch.float64)
        means = (h * comp[..., None]).sum(1) / comp.sum(1, keepdim=True)
        total += (means[0::2] - means[1::2]).sum(0)
        norms.append(h[batch.attention_mask.bool()].norm(dim=-1))
    v = total / len(pairs)
    with torch.no_grad():
        delta.bias_.copy_(v.to(torch.float32))
    median_norm = float(torch.cat(norms).median())
    v_norm = float(v.norm())
    if v_norm == 0.0:
        raise ValueError("the DiffMean vector is zero: A_p and A_n give identical activations")
    unit = median_norm / v_norm
    delta.meta.update(
        {
            "objective": "diffmean",
            "n_pairs": len(pairs),
            "include_suffix": include_suffix,
            "median_norm": median_norm,
            "unit": unit,
            "grid": symmetric_grid(3.0 * unit, grid_points),
        }
    )
    return delta
