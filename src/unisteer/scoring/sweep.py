"""Completion log-likelihoods under a delta, and the multiplier sweep.

For every pair, ``L_p`` and ``L_n`` are the negative log-likelihoods of the positive and the
negative completion given the query, summed (or averaged) over completion tokens only. From them
come PrefOdds and UtilOdds (:mod:`unisteer.scoring.odds`); the table is
:mod:`unisteer.scoring.table`.

The sweep is the hot loop of the project, so it avoids the naive way (one full forward pass per
multiplier and per completion):

* everything before the delta's block is computed once per sequence, without autograd, by
  the ordinary forward pass stopped at the delta's block (so the numbers before the site are
  the very numbers a plain ``model(...)`` call computes);
* blocks L..N then run on the cached block input for many multipliers at once, stacked as rows
  with a per-row ``m``; A_p and A_n of a pair sit in the same batch;
* the output head (final norm, unembedding) runs only at the positions that predict completion
  tokens;
* pairs are bucketed by length, and the number of rows per call follows a memory budget.

Before trusting the fast path on a model, the first batch checks it against the ordinary
forward pass, replaying several multipliers in one expanded batch and comparing the m = 0 rows
(:mod:`unisteer.replay.check`: completion NLLs within 1e-4 + 1e-6 × NLL in float32, the
naive path's own spread across batchings in bfloat16/float16); on a mismatch the sweep warns
and falls back to the naive path.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
from torch import Tensor, nn
from tqdm.auto import tqdm

from unisteer.core.positions import PositionMode, Positions
from unisteer.core.sites import replay_start
from unisteer.core.steer import steer
from unisteer.core.steering_set import Steerable, deltas_of, describe
from unisteer.data.pairs import PolarityPair
from unisteer.data.tokens import Batch, Encoded, encode_pairs, pad_id, pair_batch
from unisteer.model.config import context_length, vocab_size
from unisteer.model.memory import batch_budget, check_pairs_fit, row_bytes
from unisteer.replay.base import ReplayInput, Runner
from unisteer.replay.cache import ReplayCache, batch_key
from unisteer.replay.check import batching_spread, exact_runner, model_dtype, ordinary_nll
from unisteer.replay.logprob import completion_targets, row_nll, token_logprobs
from unisteer.replay.prefix import PrefixRunner
from unisteer.replay.recorder import HEAD_CHUNK, Recorder
from unisteer.replay.stacked import StackedRunner
from unisteer.scoring.table import Reduction, SweepResult, make_table

log = logging.getLogger(__name__)

DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of activations per call
#: The fast runners, fastest first; the first that passes the self-check is used.
RUNNERS: tuple[type[Any], ...] = (PrefixRunner, StackedRunner)


def length_buckets(
    encoded: Sequence[tuple[Encoded, Encoded]],
    pairs_fit: Callable[[int], int],
    max_pairs: int,
) -> list[list[int]]:
    """Pair indices grouped into batches of similar length, longest first.

    ``pairs_fit(width)`` is how many pairs of that padded width fit the memory budget.
    """

    def width(i: int) -> int:
        return max(len(encoded[i][0].input_ids), len(encoded[i][1].input_ids))

    order = sorted(range(len(encoded)), key=lambda i: -width(i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # Sorted longest first: the first pair of a batch sets its padded width.
        limit = min(max_pairs, max(1, pairs_fit(width(current[0]) if current else width(i))))
        if len(current) >= limit:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


# -- log-likelihoods ----------------------------------------------------------------------------


def naive_losses(
    model: nn.Module,
    batch: Batch,
    delta: Steerable | None,
    m: float | Tensor,
    positions: Positions = "all",
) -> Tensor:
    """One hooked full forward pass; the NLL sum of each row's completion. The reference path
    (:func:`unisteer.replay.check.ordinary_nll` under the delta)."""
    if delta is None:
        return ordinary_nll(model, batch)
    with steer(model, delta, m=m, positions=positions, prompt_length=batch.prompt_lengths):
        return ordinary_nll(model, batch)


def _fast_runner(
    model: nn.Module,
    delta: Steerable,
    inputs: ReplayInput,
    positions: PositionMode,
    cache: ReplayCache | None = None,
) -> tuple[Runner[Any], Any] | None:
    """The fastest runner that reproduces this model's forward pass on ``inputs`` (see
    :mod:`unisteer.replay.check`), with its capture."""
    layer, after = replay_start(model, deltas_of(delta))
    batch = inputs.batch
    # The ordinary forward pass (exactly naive_losses at m = 0), also giving the input of the
    # first block a replay runs.
    hidden, _, logits = Recorder(model, layer + 1 if after is not None else layer).forward(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask
    )
    predicts, targets = completion_targets(batch)
    reference = row_nll(token_logprobs(logits[predicts], targets), predicts)
    del logits
    inputs.hidden = hidden
    candidates = [_runner(cache, model, delta, cls) for cls in RUNNERS]
    found = exact_runner(
        candidates,
        inputs,
        delta,
        positions,
        reference,
        spread=batching_spread(model, inputs, reference),
        model_name=type(model).__name__,
    )
    inputs.hidden = None
    return found


def _trust_key(model: nn.Module, delta: Steerable, positions: PositionMode) -> Hashable:
    """What a fast runner's self-check is about: the model's dtype, the sites, the kinds of
    delta and the position mode (not the deltas' values)."""
    sites = tuple((d.site, d.kind, d.site_kind) for d in deltas_of(delta))
    return ("trust", model_dtype(model), sites, positions)


def _runner(
    cache: ReplayCache | None, model: nn.Module, delta: Steerable, cls: type[Any]
) -> Runner[Any]:
    """A runner of class ``cls`` for ``delta``'s sites: the cache's one (which made the cached
    captures), else a new one."""
    layer, after = replay_start(model, deltas_of(delta))
    if cache is None:
        return cast(Runner[Any], cls(model, layer, after))
    return cast(
        Runner[Any], cache.runner((cls.name, layer, after), lambda: cls(model, layer, after))
    )


def _capture_key(runner: Runner[Any], inputs: ReplayInput) -> Hashable:
    """A capture depends on the runner object that made it (its class and replay layer; it
    learns the output head while capturing) and on the batch's tokens."""
    return ("capture", runner, batch_key(inputs.encoded, inputs.pad))


def _capture(cache: ReplayCache | None, runner: Runner[Any], inputs: ReplayInput) -> Any:
    if cache is None:
        return runner.capture(inputs)
    return cache.capture(_capture_key(runner, inputs), lambda: runner.capture(inputs))


def sweep(
    model: nn.Module,
    tokenizer: Any,
    pairs: Sequence[PolarityPair],
    delta: Steerable | None,
    ms: Sequence[float] = (0.0,),
    *,
    reduction: Reduction = "sum",
    include_suffix: bool = False,
    system_prompt: str | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    max_pairs_per_batch: int = 16,
    positions: PositionMode = "all",
    method: Literal["fast", "naive"] = "fast",
    progress: bool = True,
    cache: ReplayCache | None = None,
) -> SweepResult:
    """L_p, L_n, PrefOdds and UtilOdds for every pair at every multiplier in ``ms``.

    Returns a :class:`SweepResult` whose ``table`` has one row per (pair, m), in the order of
    ``pairs`` then ``ms``. ``method="naive"`` runs one hooked full forward per m (the reference).
    ``cache`` (a :class:`~unisteer.replay.cache.ReplayCache` of this model) shares the fast
    path's self-check and the captures with other sweeps of the same model: the numbers are
    the same with or without it.
    """
    if cache is not None:
        cache.check_model(model)
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    grid = [float(m) for m in ms]
    if not grid:
        raise ValueError("ms is empty")
    if not all(math.isfinite(m) for m in grid):
        raise ValueError("ms must be finite numbers")
    if delta is None and any(m != 0.0 for m in grid):
        raise ValueError("without a delta, every m must be 0")
    encoded = encode_pairs(
        tokenizer,
        pairs,
        include_suffix=include_suffix,
        system_prompt=system_prompt,
        max_tokens=context_length(model),
    )
    pad = pad_id(tokenizer)
    # Never more than the devices running the blocks have free (a dispatched model's GPUs).
    memory_budget = batch_budget(model, memory_budget)
    buckets = length_buckets(
        encoded,
        lambda w: memory_budget // (2 * row_bytes(model, w, w)),  # the capture pass: all logits
        max_pairs_per_batch,
    )
    check_pairs_fit(model, pairs, encoded, "scoring")
    n = len(pairs)
    nll = np.zeros((n, len(grid), 2))
    counts = np.zeros((n, 2), dtype=np.int64)
    nonzero = [j for j, m in enumerate(grid) if m != 0.0]
    # One nonzero m costs one steered forward pass on the naive path; the fast path's
    # exactness check alone costs more (see unisteer.replay.check), so it starts at two.
    # Not "or when the cache has checked it already": the two paths agree only to rounding,
    # and a number must not depend on what the process did before (a resumed experiment
    # reads its sweeps from disk, so its cache is cold where an unbroken run's is warm).
    trust = None if delta is None else _trust_key(model, delta, positions)
    checked = cache is not None and trust is not None and cache.decided(trust)
    want_fast = method == "fast" and delta is not None and len(nonzero) >= 2
    runner: Runner[Any] | None = None
    stacked: Runner[Any] | None = None
    decided = not want_fast
    bar = tqdm(total=len(buckets) * len(grid), desc="sweep", unit="m·batch", disable=not progress)

    def store(indices: list[int], j: int, values: Tensor) -> None:
        nll[indices, j, 0] = values[0::2].numpy()
        nll[indices, j, 1] = values[1::2].numpy()

    try:
        for indices in buckets:
            batch = pair_batch(encoded, indices, pad)
            per_row = batch.completion_mask[:, 1:].sum(1)
            counts[indices, 0] = per_row[0::2].numpy()
            counts[indices, 1] = per_row[1::2].numpy()
            inputs = ReplayInput([encoded[i] for i in indices], batch, pad)
            cap: Any = None
            if not decided:
                assert delta is not None
                if cache is not None and checked:
                    runner = cache.trusted(trust)
                else:
                    found = _fast_runner(model, delta, inputs, positions, cache)
                    runner, cap = found if found is not None else (None, None)
                    if cache is not None:
                        cache.trust(trust, runner)
                        if runner is not None and cap is not None:
                            cache.store(_capture_key(runner, inputs), cap)
                decided = True
            if runner is None:
                for j, m in enumerate(grid):
                    store(indices, j, naive_losses(model, batch, delta, m, positions))
                    bar.update(1)
                continue
            assert delta is not None
            active: Runner[Any] = runner
            if cap is None:
                cap = _capture(cache, runner, inputs)
            if cap is None:  # A_p and A_n of some pair were given different prompt tokens
                stacked = stacked or _runner(cache, model, delta, StackedRunner)
                active, cap = stacked, _capture(cache, stacked, inputs)
            for j, m in enumerate(grid):
                if m == 0.0:
                    store(indices, j, cap.base)
                    bar.update(1)
            rows = 2 * len(indices)
            width = int(batch.input_ids.shape[1])
            # The head runs in chunks of HEAD_CHUNK positions: its logits are not per row.
            one_row = row_bytes(model, width, 0)
            head_bytes = 3 * 4 * HEAD_CHUNK * vocab_size(model)
            step = max(1, (memory_budget - head_bytes) // (one_row * rows))  # m per call
            for start in range(0, len(nonzero), step):
                chunk = nonzero[start : start + step]
                values = active.run(cap, delta, [grid[j] for j in chunk], positions)
                for k, j in enumerate(chunk):
                    store(indices, j, values[k])
                bar.update(len(chunk))
    finally:
        bar.close()

    if reduction == "mean":
        nll = nll / np.maximum(counts, 1)[:, None, :]
    ids = [p.id for p in pairs for _ in grid]
    m_col = [m for _ in pairs for m in grid]
    table = make_table(
        ids,
        m_col,
        nll[:, :, 0].reshape(-1),
        nll[:, :, 1].reshape(-1),
        np.repeat(counts[:, 0], len(grid)),
        np.repeat(counts[:, 1], len(grid)),
    )
    meta = {
        "ms": grid,
        "n_pairs": n,
        "delta": None if delta is None else describe(delta),
        "include_suffix": include_suffix,
        "positions": positions,
        "method": runner.name if runner is not None else "naive",
    }
    return SweepResult(table, reduction, meta)


def score_pairs(
    model: nn.Module,
    tokenizer: Any,
    pairs: Sequence[PolarityPair],
    delta: Steerable | None = None,
    m: float = 0.0,
    **kwargs: Any,
) -> pd.DataFrame:
    """L_p, L_n, PrefOdds and UtilOdds per pair at one multiplier (a one-point sweep)."""
    if delta is None and m != 0.0:
        raise ValueError("m has no effect without a delta; pass delta=")
    return sweep(model, tokenizer, pairs, delta, [m], progress=False, **kwargs).table
