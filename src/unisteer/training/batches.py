"""The trainer's forward pass: pairs grouped into minibatches, and per-row log-probabilities
under a delta, computed the fast way or the naive way.

The model is frozen and the delta sits in block L, so block L's input does not depend on the
trained parameters. :func:`prepare` runs every minibatch once through the model without
autograd, recording block L's input and the arguments of blocks L..N (see
:mod:`unisteer.replay.recorder`), and the unsteered log-probabilities RePS needs. Every step
then runs only blocks L..N, forward and backward, and the output head only at positions that predict
completion tokens (``method="cached"``). ``method="naive"`` runs the whole hooked model on
every step: the reference the cached path is checked against, and the benchmark's baseline.

Minibatches are fixed once (a seeded shuffle of the pairs); each epoch visits them in a new
order. Regrouping pairs every epoch would need blocks 0..L-1 again.

The minibatch is the objective's unit (SPLIT's minibatch form pools over it, the multipliers
are drawn per minibatch), so memory never changes it. When one minibatch's rows, with
autograd's activations, need more than half the memory free on the devices running the blocks
(:func:`unisteer.model.memory.rows_that_fit`: each GPU's ``mem_get_info``), :func:`scores`
runs them in passes of fewer rows, each under ``torch.utils.checkpoint`` so that only one
pass's activations are alive in the backward pass: the same loss and gradients, up to the
rounding of the smaller matrix products.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from tqdm.auto import tqdm

from unisteer.core.delta import Delta
from unisteer.core.positions import PositionMode
from unisteer.core.sites import block_index_of
from unisteer.core.steer import Op, steer
from unisteer.data.pairs import PolarityPair
from unisteer.data.tokens import Batch, encode_pairs, pad_id, pair_batch
from unisteer.model.config import context_length
from unisteer.model.memory import check_pairs_fit, on_model_device, rows_that_fit
from unisteer.replay.base import ReplayInput
from unisteer.replay.check import (
    CHECK_MS,
    batching_spread,
    excess,
    log_excess,
    log_failed,
    ordinary_nll,
    warn_naive,
)
from unisteer.replay.logprob import completion_targets, row_sums, token_logprobs
from unisteer.replay.stacked import StackedCapture, StackedRunner
from unisteer.training.objectives.rows import Rows, Scores

log = logging.getLogger(__name__)

Method = Literal["cached", "naive"]

Prepared = tuple[list["TrainBatch"], "StackedRunner | None"]


class PrepareCache:
    """Prepared minibatches, for reuse across training runs on one model (several objectives
    and kinds at the same layer share one capture). Owned by the caller.

    Entries are keyed by the model object itself (its identity, never a number such as
    ``id(model)`` that a later model could reuse), then by what decides the batches (block,
    pairs, batch size, seed, method and the token settings). The entries keep their model
    alive until the cache is dropped.
    """

    def __init__(self) -> None:
        self._by_model: dict[nn.Module, dict[tuple[Any, ...], Prepared]] = {}

    def get(self, model: nn.Module, key: tuple[Any, ...]) -> Prepared | None:
        return self._by_model.get(model, {}).get(key)

    def put(self, model: nn.Module, key: tuple[Any, ...], value: Prepared) -> None:
        self._by_model.setdefault(model, {})[key] = value

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_model.values())


@dataclass
class TrainBatch:
    """One minibatch of P pairs as rows ``[p0+, p0-, p1+, p1-, ...]`` (right-padded)."""

    ids: list[str]
    batch: Batch
    next_ids: Tensor  # [2P, T] the token each position predicts (0 past the end)
    predicts: Tensor  # [2P, T] bool: positions predicting a completion token
    tokens: Tensor  # [2P] completion tokens
    seq_tokens: Tensor  # [2P] all tokens of the sequence
    ref_logp: Tensor  # [P, 2] unsteered summed log-probabilities of (A_p, A_n)
    capture: StackedCapture | None  # block L's input and the calls of blocks L..N

    @property
    def n_pairs(self) -> int:
        return len(self.ids)


def _group(n: int, batch_size: int, seed: int) -> list[list[int]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def prepare(
    model: nn.Module,
    tokenizer: Any,
    pairs: Sequence[PolarityPair],
    delta: Delta,
    *,
    batch_size: int,
    seed: int,
    method: Method = "cached",
    positions: PositionMode = "all",
    include_suffix: bool = False,
    system_prompt: str | None = None,
    progress: bool = False,
    desc: str = "caching",
    cache: PrepareCache | None = None,
) -> tuple[list[TrainBatch], StackedRunner | None]:
    """Tokenise, group and (for ``"cached"``) run every minibatch once without autograd.

    Returns the batches and the runner that replays blocks L..N, or ``None`` for the naive
    path: the cached path is checked on the first batch against the ordinary forward pass
    (:mod:`unisteer.replay.check`, the sweep's check and tolerance) and falls back to
    ``"naive"`` with a warning when it differs. With a :class:`PrepareCache`, a second call
    with the same model, block, pairs and settings returns the first call's batches.
    """
    if not pairs:
        raise ValueError("no training pairs")
    layer = block_index_of(model, delta.site)
    key = (
        layer,
        tuple((p.id, p.query, p.positive, p.negative) for p in pairs),
        batch_size,
        seed,
        method,
        positions,
        include_suffix,
        system_prompt,
    )
    if cache is not None and (hit := cache.get(model, key)) is not None:
        return hit
    pad = pad_id(tokenizer)
    encoded = encode_pairs(
        tokenizer,
        pairs,
        include_suffix=include_suffix,
        system_prompt=system_prompt,
        max_tokens=context_length(model),
    )
    check_pairs_fit(model, pairs, encoded, "training on", grad=True)
    runner = StackedRunner(model, layer)
    out: list[TrainBatch] = []
    for group in tqdm(
        _group(len(pairs), batch_size, seed), desc=desc, disable=not progress, unit="batch"
    ):
        batch = pair_batch(encoded, group, pad)
        predicts, _ = completion_targets(batch)
        next_ids = torch.zeros_like(batch.input_ids)
        next_ids[:, :-1] = batch.input_ids[:, 1:]
        inputs = ReplayInput([encoded[i] for i in group], batch, pad)
        name = type(model).__name__
        cap: StackedCapture | None = None
        if method == "cached":
            try:
                cap = runner.capture(inputs)  # the ordinary forward pass, no autograd
            except Exception as e:  # an architecture the recorder does not understand
                log_failed("cached training", name, e)
                warn_naive("training", name)
                method = "naive"
        base = cap.base if cap is not None else ordinary_nll(model, batch)
        tb = TrainBatch(
            ids=[pairs[i].id for i in group],
            batch=batch,
            next_ids=next_ids,
            predicts=predicts,
            tokens=predicts.sum(1),
            seq_tokens=batch.attention_mask.sum(1),
            ref_logp=(-base).to(torch.float32).reshape(-1, 2),
            capture=cap,
        )
        if cap is not None and not out:
            spread = batching_spread(model, inputs, cap.base)
            if cached_excess(model, tb, delta, runner, positions, spread) > 0:
                warn_naive("training", name)
                method = "naive"
                tb.capture = None
        out.append(tb)
    result = (out, runner if method == "cached" else None)
    if cache is not None:
        cache.put(model, key, result)
    return result


def _interventions(delta: Delta, rows: Rows) -> tuple[list[Delta], list[Tensor], list[Op]]:
    deltas, ms, ops = [delta], [rows.m], ["add"]
    if bool(rows.null.any()):
        deltas.append(delta)
        ms.append(rows.null.to(torch.float32))
        ops.append("null")
    return deltas, ms, ops  # type: ignore[return-value]


def cached_excess(
    model: nn.Module,
    tb: TrainBatch,
    delta: Delta,
    runner: StackedRunner,
    positions: PositionMode = "all",
    spread: float = 0.0,
) -> float:
    """How far the cached path, run as training runs it, misses the ordinary forward pass on
    ``tb`` beyond the tolerance of :mod:`unisteer.replay.check` (``<= 0``: trusted; ``inf``:
    it failed on this architecture). Every sequence of the minibatch is picked, in reverse
    order, once per multiplier of ``CHECK_MS`` (rows interleaved, so the m = 0 rows sit next to
    steered ones), and the m = 0 rows are compared with the capture's ordinary pass."""
    assert tb.capture is not None
    seqs = torch.arange(tb.batch.input_ids.shape[0]).flip(0)
    index = seqs.repeat_interleave(len(CHECK_MS))
    m = torch.tensor(CHECK_MS, dtype=torch.float32).repeat(len(seqs))
    rows = Rows(index // 2, index % 2, m, torch.zeros(len(index), dtype=torch.bool))
    name = type(model).__name__
    try:
        with torch.no_grad():
            got = row_scores(model, tb, delta, rows, runner, positions).logp
    except Exception as e:  # an architecture the replay does not understand
        log_failed("cached training", name, e)
        return math.inf
    zero = m == 0.0
    err = excess(-got[zero].detach().double().cpu(), tb.capture.base[index[zero]], spread)
    log_excess("cached training", name, err)
    return err


def row_scores(
    model: nn.Module,
    tb: TrainBatch,
    delta: Delta,
    rows: Rows,
    runner: StackedRunner | None,
    positions: PositionMode = "all",
) -> Scores:
    """Summed completion log-probabilities of ``rows`` under ``delta`` (differentiable in the
    delta's parameters when autograd is on)."""
    index = 2 * rows.pair + rows.side  # which sequence of the minibatch each row runs
    predicts = tb.predicts.index_select(0, index)
    targets = tb.next_ids.index_select(0, index)[predicts]
    prompt = tb.batch.prompt_lengths.index_select(0, index)
    deltas, ms, ops = _interventions(delta, rows)
    if tb.capture is not None and runner is not None:
        cap = tb.capture
        width = cap.hidden.shape[1]
        with (
            steer(model, deltas, m=ms, positions=positions, prompt_length=prompt, ops=ops) as s,
            s.calling(len(rows), width),
        ):
            h = runner.rec.blocks_from(
                cap.hidden.index_select(0, index.to(cap.hidden.device)),
                cap.calls,
                cap.hidden.shape[0],
                rows=index,
            )
            logp = runner.rec.logprobs(h[predicts], targets)
    else:
        with steer(model, deltas, m=ms, positions=positions, prompt_length=prompt, ops=ops):
            inputs = {
                "input_ids": tb.batch.input_ids.index_select(0, index),
                "attention_mask": tb.batch.attention_mask.index_select(0, index),
            }
            logits = model(**on_model_device(model, inputs)).logits
        logp = token_logprobs(logits[predicts], targets)
    return Scores(
        # On the host with the counts below, wherever the head ran (differentiable).
        logp=row_sums(logp, predicts).cpu(),
        tokens=tb.tokens.index_select(0, index),
        seq_tokens=tb.seq_tokens.index_select(0, index),
        ref_logp=tb.ref_logp,
    )


def rows_per_pass(
    model: nn.Module, batches: Sequence[TrainBatch], runner: StackedRunner | None
) -> int | None:
    """The most rows of these minibatches one training pass (forward and backward) holds in the
    memory free on the devices running the blocks, sized for the widest minibatch (logits
    only at completion positions on the cached path, everywhere on the naive one); ``None``
    when no device says how much it has free."""
    if not batches:
        return None
    width = max(int(tb.batch.input_ids.shape[1]) for tb in batches)
    heads = width if runner is None else max(int(tb.predicts.sum(1).max()) for tb in batches)
    return rows_that_fit(model, width, heads, grad=True)


def scores(
    model: nn.Module,
    tb: TrainBatch,
    delta: Delta,
    rows: Rows,
    runner: StackedRunner | None,
    positions: PositionMode = "all",
    per_pass: int | None = None,
) -> Scores:
    """:func:`row_scores` of ``rows``, in passes of at most ``per_pass`` rows (see the module
    docstring); one pass when ``per_pass`` is ``None`` or not smaller than the rows."""
    if per_pass is None or len(rows) <= per_pass:
        return row_scores(model, tb, delta, rows, runner, positions)

    def logp(part: Rows) -> Tensor:
        return row_scores(model, tb, delta, part, runner, positions).logp

    parts = []
    for start in range(0, len(rows), per_pass):
        part = rows.take(slice(start, start + per_pass))
        if torch.is_grad_enabled():
            parts.append(checkpoint(logp, part, use_reentrant=False))
        else:
            parts.append(logp(part))
    index = 2 * rows.pair + rows.side
    return Scores(
        logp=torch.cat(parts),
        tokens=tb.tokens.index_select(0, index),
        seq_tokens=tb.seq_tokens.index_select(0, index),
        ref_logp=tb.ref_logp,
    )
