"""Completion log-likelihoods under a delta, and the multiplier sweep.

For every pair, ``L_p`` and ``L_n`` are the negative log-likelihoods of the positive and the
negative completion given the query, summed (or averaged) over completion tokens only. From them
come PrefOdds and UtilOdds (:mod:`unisteer.odds`).

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
forward pass at ``m = 0`` (completion NLLs within 1e-4 + 1e-6 × NLL, float32 rounding); on
a mismatch the sweep warns and falls back to the naive path.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from unisteer.atomic import write_bytes_atomic, write_text_atomic
from unisteer.data.pairs import PolarityPair
from unisteer.data.tokens import Batch, Encoded, collate, encode_pair, pad_id
from unisteer.delta import Delta
from unisteer.logprob import token_logprobs
from unisteer.odds import pref_odds, util_odds
from unisteer.positions import PositionMode, Positions
from unisteer.replay import (
    HEAD_CHUNK,
    PrefixRunner,
    Recorder,
    StackedRunner,
    block_index_of,
    completion_targets,
    row_sums,
    site_is_block_output,
)
from unisteer.steer import steer

log = logging.getLogger(__name__)

Reduction = Literal["sum", "mean"]
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of activations per call


# -- tokens -------------------------------------------------------------------------------------


def encode_pairs(
    tokenizer: Any,
    pairs: Sequence[PolarityPair],
    *,
    include_suffix: bool = False,
    system_prompt: str | None = None,
) -> list[tuple[Encoded, Encoded]]:
    return [
        encode_pair(tokenizer, p, include_suffix=include_suffix, system_prompt=system_prompt)
        for p in pairs
    ]


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


def pair_batch(
    encoded: Sequence[tuple[Encoded, Encoded]], indices: Sequence[int], pad: int
) -> Batch:
    """Rows ``[p0+, p0-, p1+, p1-, ...]``, right-padded."""
    return collate([e for i in indices for e in encoded[i]], pad, padding_side="right")


# -- log-likelihoods ----------------------------------------------------------------------------


def naive_losses(
    model: nn.Module,
    batch: Batch,
    delta: Delta | None,
    m: float | Tensor,
    positions: Positions = "all",
) -> Tensor:
    """One hooked full forward pass; the NLL sum of each row's completion. The reference path."""
    predicts, targets = completion_targets(batch)
    with torch.no_grad():
        if delta is None:
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        else:
            with steer(model, delta, m=m, positions=positions, prompt_length=batch.prompt_lengths):
                logits = model(
                    input_ids=batch.input_ids, attention_mask=batch.attention_mask
                ).logits
    logp = token_logprobs(logits[predicts], targets)
    return row_sums(logp, predicts)


def _fast_runner(
    model: nn.Module,
    delta: Delta,
    encoded: Sequence[tuple[Encoded, Encoded]],
    batch: Batch,
    pad: int,
    positions: PositionMode,
) -> tuple[StackedRunner | PrefixRunner | None, Any]:
    """The fastest runner that reproduces this model's forward pass on ``batch`` (checked at
    m = 0 against the ordinary forward pass, to 1e-4 + 1e-6 × NLL per completion, both its
    capture and a replay), with its capture."""
    layer = block_index_of(model, delta.site)
    after = site_is_block_output(model, delta)
    # The ordinary forward pass (exactly naive_losses at m = 0), also giving the input of the
    # first block a replay runs.
    hidden, _, logits = Recorder(model, layer + 1 if after else layer).forward(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask
    )
    predicts, targets = completion_targets(batch)
    reference = row_sums(token_logprobs(logits[predicts], targets), predicts)
    del logits
    candidates: list[StackedRunner | PrefixRunner] = [
        PrefixRunner(model, layer, after),
        StackedRunner(model, layer, after),
    ]
    for runner in candidates:
        try:
            cap = (
                runner.capture(encoded, pad, hidden)
                if isinstance(runner, PrefixRunner)
                else runner.capture(batch)
            )
            if cap is None:
                continue
            zero = runner.run(cap, delta, [0.0], positions)[0]  # type: ignore[arg-type]
        except Exception as e:  # an architecture the replay does not understand
            log.info(
                "unisteer: the %s sweep path failed on %s: %s", runner.name, type(model).__name__, e
            )
            continue
        # float32 sums of a few hundred nats, computed in another order, differ by rounding:
        # allow 1e-4 plus one part in a million of the completion's NLL.
        limit = 1e-4 + 1e-6 * reference.abs()
        err = max(
            float(((cap.base - reference).abs() - limit).max()),
            float(((zero - reference).abs() - limit).max()),
        )
        if err <= 0.0:
            return runner, cap
        log.info(
            "unisteer: the %s sweep path exceeds its tolerance by %.2e on %s",
            runner.name,
            err,
            type(model).__name__,
        )
    log.warning(
        "unisteer: no fast sweep path reproduces %s's forward pass; using the naive path",
        type(model).__name__,
    )
    return None, None


# -- results ------------------------------------------------------------------------------------


@dataclass
class SweepResult:
    """The tidy table of a sweep and its per-m summary."""

    table: pd.DataFrame
    reduction: Reduction = "sum"
    meta: dict[str, Any] = field(default_factory=dict)

    def means(self) -> pd.DataFrame:
        """Per m: mean and standard error of PrefOdds and UtilOdds, with point counts.

        UtilOdds statistics use in-domain points only; ``n_out_of_domain`` counts the rest.
        """
        return summarize_sweep(self.table)

    def save(self, directory: str | Path) -> Path:
        """``sweep.parquet`` (the table), ``means.parquet`` and ``sweep.json`` (metadata)."""
        import io
        import json

        out = Path(directory)
        for name, frame in (("sweep.parquet", self.table), ("means.parquet", self.means())):
            buf = io.BytesIO()
            frame.to_parquet(buf, index=False)
            write_bytes_atomic(out / name, buf.getvalue())
        meta = {**self.meta, "reduction": self.reduction}
        write_text_atomic(out / "sweep.json", json.dumps(meta, indent=2, default=str) + "\n")
        return out


def summarize_sweep(table: pd.DataFrame) -> pd.DataFrame:
    def sem(x: pd.Series) -> float:
        x = x.dropna()
        return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")

    rows = []
    for m, g in table.groupby("m", sort=True):
        ok = g[g["util_in_domain"]]
        rows.append(
            {
                "m": float(m),
                "n": len(g),
                "pref_odds": float(g["pref_odds"].mean()),
                "pref_odds_sem": sem(g["pref_odds"]),
                "util_odds": float(ok["util_odds"].mean()) if len(ok) else float("nan"),
                "util_odds_sem": sem(ok["util_odds"]),
                "n_out_of_domain": int((~g["util_in_domain"]).sum()),
                "loss_pos": float(g["loss_pos"].mean()),
                "loss_neg": float(g["loss_neg"].mean()),
            }
        )
    return pd.DataFrame(rows)


def _table(
    ids: Sequence[str],
    ms: Sequence[float],
    lp: np.ndarray,
    ln: np.ndarray,
    npos: np.ndarray,
    nneg: np.ndarray,
) -> pd.DataFrame:
    util, ok = util_odds(lp, ln)
    return pd.DataFrame(
        {
            "pair_id": list(ids),
            "m": np.asarray(ms, dtype=np.float64),
            "loss_pos": lp,
            "loss_neg": ln,
            "pref_odds": pref_odds(lp, ln),
            "util_odds": util,
            "util_in_domain": ok,
            "tokens_pos": npos,
            "tokens_neg": nneg,
        }
    )


# -- the public entry points --------------------------------------------------------------------


def _vocab(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    text = (
        config.get_text_config()
        if config is not None and hasattr(config, "get_text_config")
        else config
    )
    return int(getattr(text, "vocab_size", 50000) or 50000)


def _row_bytes(model: nn.Module, width: int, logit_positions: int) -> int:
    """Rough float32 activation bytes of one sequence row in a forward pass without autograd:
    the widest per-token tensors of a block, attention scores, and the logits (x3 for the
    softmax and its temporaries)."""
    config = getattr(model, "config", None)
    text = (
        config.get_text_config()
        if config is not None and hasattr(config, "get_text_config")
        else config
    )
    d = int(getattr(text, "hidden_size", 1024) or 1024)
    d_ff = int(getattr(text, "intermediate_size", 4 * d) or 4 * d)
    heads = int(getattr(text, "num_attention_heads", 16) or 16)
    vocab = _vocab(model)
    return 4 * (width * (8 * d + 3 * d_ff + 2 * heads * width) + 3 * logit_positions * vocab)


def sweep(
    model: nn.Module,
    tokenizer: Any,
    pairs: Sequence[PolarityPair],
    delta: Delta | None,
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
) -> SweepResult:
    """L_p, L_n, PrefOdds and UtilOdds for every pair at every multiplier in ``ms``.

    Returns a :class:`SweepResult` whose ``table`` has one row per (pair, m), in the order of
    ``pairs`` then ``ms``. ``method="naive"`` runs one hooked full forward per m (the reference).
    """
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
        tokenizer, pairs, include_suffix=include_suffix, system_prompt=system_prompt
    )
    pad = pad_id(tokenizer)
    buckets = length_buckets(
        encoded,
        lambda w: memory_budget // (2 * _row_bytes(model, w, w)),  # the capture pass: all logits
        max_pairs_per_batch,
    )
    n = len(pairs)
    nll = np.zeros((n, len(grid), 2))
    counts = np.zeros((n, 2), dtype=np.int64)
    nonzero = [j for j, m in enumerate(grid) if m != 0.0]
    want_fast = method == "fast" and delta is not None and bool(nonzero)
    runner: StackedRunner | PrefixRunner | None = None
    stacked: StackedRunner | None = None
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
            sub = [encoded[i] for i in indices]
            cap: Any = None
            if not decided:
                assert delta is not None
                runner, cap = _fast_runner(model, delta, sub, batch, pad, positions)
                decided = True
            if runner is None:
                for j, m in enumerate(grid):
                    store(indices, j, naive_losses(model, batch, delta, m, positions))
                    bar.update(1)
                continue
            assert delta is not None
            active: StackedRunner | PrefixRunner = runner
            if cap is None and isinstance(runner, PrefixRunner):
                hidden = runner.rec.block_input(
                    input_ids=batch.input_ids, attention_mask=batch.attention_mask
                )
                cap = runner.capture(sub, pad, hidden)
            elif cap is None and isinstance(runner, StackedRunner):
                cap = runner.capture(batch)
            if cap is None:  # A_p and A_n of some pair were given different prompt tokens
                stacked = stacked or StackedRunner(
                    model, block_index_of(model, delta.site), runner.after_site
                )
                active, cap = stacked, stacked.capture(batch)
            for j, m in enumerate(grid):
                if m == 0.0:
                    store(indices, j, cap.base)
                    bar.update(1)
            rows = 2 * len(indices)
            width = int(batch.input_ids.shape[1])
            # The head runs in chunks of HEAD_CHUNK positions: its logits are not per row.
            row_bytes = _row_bytes(model, width, 0)
            head_bytes = 3 * 4 * HEAD_CHUNK * _vocab(model)
            step = max(1, (memory_budget - head_bytes) // (row_bytes * rows))  # m per call
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
    table = _table(
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
        "delta": None if delta is None else {"kind": delta.kind, "site": delta.site},
        "include_suffix": include_suffix,
        "positions": positions,
        "method": runner.name if runner is not None else "naive",
    }
    return SweepResult(table, reduction, meta)


def score_pairs(
    model: nn.Module,
    tokenizer: Any,
    pairs: Sequence[PolarityPair],
    delta: Delta | None = None,
    m: float = 0.0,
    **kwargs: Any,
) -> pd.DataFrame:
    """L_p, L_n, PrefOdds and UtilOdds per pair at one multiplier (a one-point sweep)."""
    if delta is None and m != 0.0:
        raise ValueError("m has no effect without a delta; pass delta=")
    return sweep(model, tokenizer, pairs, delta, [m], progress=False, **kwargs).table
