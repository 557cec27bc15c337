"""Log-probabilities of target tokens, computed so that a sum over many tokens stays exact.

``torch.log_softmax`` in float32 over a large vocabulary is biased: on SmolLM2's 49,152-token
head it is off by +7e-6 nats per token on average (up to 1.6e-5), so a completion's NLL sum
drifts by ~1e-4 per 20 tokens, always in the same direction. Here the exponentials are
summed in float32 (PyTorch's cascade summation, unbiased) and the rest is done in float64:
per-token error ~5e-7 and no bias, for about 1.6x the time of ``log_softmax``, and only the
target column is ever written out.
"""

from __future__ import annotations

import torch
from torch import Tensor

from unisteer.data.tokens import Batch


def token_logprobs(logits: Tensor, targets: Tensor) -> Tensor:
    """``log_softmax(logits)[..., targets]`` as float64: ``logits[..., V]``, ``targets[...]``
    (int64), result ``[...]``. Differentiable."""
    x = logits.float()
    top = x.detach().max(-1, keepdim=True).values  # the result does not depend on it
    shifted = x - top
    picked = shifted.gather(-1, targets.to(x.device)[..., None])[..., 0].double()
    needs_graph = torch.is_grad_enabled() and shifted.requires_grad
    exps = shifted.exp() if needs_graph else shifted.exp_()  # in place: one [.., V] buffer
    return picked - exps.sum(-1).double().log()


def unembed_logprobs(
    features: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    targets: Tensor,
    softcap: float | None = None,
    vocab_chunk: int = 4096,
    *,
    scale: tuple[float, float] = (1.0, 1.0),
) -> Tensor:
    """``log_softmax(softcap((features @ weight.T + bias) · factor / divisor))`` at ``targets``
    (``scale = (factor, divisor)``), the logits formed in ``weight``'s dtype exactly as the
    model's head forms them (see :func:`finish_logits`), as float64, without
    ever holding a full ``[n, V]`` logits tensor: the vocabulary goes through in slices of
    ``vocab_chunk`` rows of ``weight``, each slice keeping its own max and its float32 sum of
    exponentials, and the slices are combined in float64 (the same accuracy as
    :func:`token_logprobs`). Slices stay in cache, which makes the unembedding ~15 % faster on
    a CPU than one large matmul. ``features[n, d]``, ``targets[n]`` or ``targets[n, j]`` (``j``
    tokens scored from the same position); no autograd.
    """
    flat = targets.dim() == 1
    tgt = (targets[:, None] if flat else targets).to(weight.device)
    n = features.shape[0]
    x = features.to(weight.device, weight.dtype)
    picked = torch.zeros(tgt.shape, dtype=torch.float64, device=x.device)
    tops, sums = [], []
    with torch.no_grad():
        for v0 in range(0, weight.shape[0], vocab_chunk):
            v1 = min(v0 + vocab_chunk, weight.shape[0])
            logits = torch.nn.functional.linear(
                x, weight[v0:v1], None if bias is None else bias[v0:v1].to(weight.dtype)
            )
            logits = finish_logits(logits, scale, softcap)
            top = logits.max(-1, keepdim=True).values
            logits.sub_(top)
            inside = (tgt >= v0) & (tgt < v1)
            if bool(inside.any()):
                local = (tgt - v0).clamp(0, v1 - v0 - 1)
                got = logits.gather(-1, local).double() + top.double()
                picked = torch.where(inside, got, picked)
            tops.append(top[:, 0].double())
            sums.append(logits.exp_().sum(-1).double())
        if not tops:
            return picked.new_zeros(tgt.shape if not flat else (n,))
        top_all = torch.stack(tops, -1)  # [n, chunks]
        best = top_all.max(-1, keepdim=True).values
        lse = best[:, 0] + (torch.stack(sums, -1) * (top_all - best).exp()).sum(-1).log()
    out = picked - lse[:, None]
    return out[:, 0] if flat else out


def finish_logits(
    logits: Tensor, scale: tuple[float, float] = (1.0, 1.0), softcap: float | None = None
) -> Tensor:
    """What a model's forward does to its head's output outside any module, in the head's
    dtype and order (``logits · factor``, ``/ divisor``, then Gemma 2's soft-cap
    ``cap · tanh(logits / cap)``), then cast to float32 (as the loss reads logits). Doing it
    in the model's dtype, not in float32, keeps a replay of a bfloat16 model equal to its
    ordinary forward pass."""
    factor, divisor = scale
    if factor != 1.0:
        logits = logits * factor
    if divisor != 1.0:
        logits = logits / divisor
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits.float()


def completion_targets(batch: Batch) -> tuple[Tensor, Tensor]:
    """Positions predicting a completion token (``[B, T]`` bool) and the tokens (flat, in the
    order of ``predicts.nonzero()``)."""
    predicts = torch.zeros_like(batch.completion_mask)
    predicts[:, :-1] = batch.completion_mask[:, 1:]
    return predicts, batch.input_ids[:, 1:][batch.completion_mask[:, 1:]]


def row_sums(values: Tensor, predicts: Tensor) -> Tensor:
    """Per-row sums of flat per-token ``values`` ordered like ``predicts.nonzero()``, in the
    values' dtype and on their device; differentiable."""
    rows = predicts.nonzero()[:, 0].to(values.device)
    out = torch.zeros(predicts.shape[0], dtype=values.dtype, device=values.device)
    return out.index_add(0, rows, values)


def row_nll(token_logp: Tensor, predicts: Tensor) -> Tensor:
    """Per-row NLL sums as float64 on the CPU (the sweep's numbers), without autograd."""
    return -row_sums(token_logp.detach().double().cpu(), predicts.cpu())
