"""Completion log-likelihoods under a delta, and the multiplier sweep.

For every pair, ``L_p`` and ``L_n`` are the negative log-likelihoods of the positive and the
negative completion given the query, summed (or averaged) over completion tokens only. From them
come PrefOdds and UtilOdds (:mod:`unisteer.odds`).

The sweep is the hot loop of the project, so it avoids the naive way (one full forward pass per
multiplier and per completion):

* everything before the delta's block is computed once per sequence, without autograd, by one
  ordinary forward pass that also records the arguments every later block receives; that pass
  also gives the exact ``m = 0`` point;
* blocks L..N then run on the cached block input for many multipliers at once, stacked as rows
  with a per-row ``m``; A_p and A_n of a pair sit in the same batch;
* the output head (final norm, unembedding) runs only at the positions that predict completion
  tokens;
* pairs are bucketed by length, and the number of rows per call follows a memory budget.

Before trusting the fast path on a model, the first batch checks it against the ordinary
forward pass at ``m = 0`` (max abs difference of the completion log-probabilities ≤ 1e-4); on
a mismatch the sweep warns and falls back to the naive path.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
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
from unisteer.odds import pref_odds, util_odds
from unisteer.positions import PositionMode, Positions
from unisteer.sites import find_blocks
from unisteer.steer import Steering, steer

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


def _targets(batch: Batch) -> tuple[Tensor, Tensor]:
    """Positions that predict a completion token (``[n]`` flat indices) and those tokens."""
    predicts = torch.zeros_like(batch.completion_mask)
    predicts[:, :-1] = batch.completion_mask[:, 1:]
    targets = batch.input_ids[:, 1:][batch.completion_mask[:, 1:]]
    return predicts, targets


def _reduce(token_logp: Tensor, predicts: Tensor, reduction: Reduction) -> Tensor:
    """Per-row NLL from flat per-token log-probs ordered like ``predicts.nonzero()``."""
    rows = predicts.nonzero()[:, 0]
    nll = torch.zeros(predicts.shape[0], dtype=torch.float64)
    nll.index_add_(0, rows.cpu(), -token_logp.double().cpu())
    if reduction == "mean":
        nll = nll / predicts.sum(1).clamp(min=1).double().cpu()
    return nll


def _token_logp(logits: Tensor, targets: Tensor, softcap: float | None) -> Tensor:
    logits = logits.float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None])[:, 0]


def naive_losses(
    model: nn.Module,
    batch: Batch,
    delta: Delta | None,
    m: float | Tensor,
    reduction: Reduction = "sum",
    positions: Positions = "all",
) -> Tensor:
    """One hooked full forward pass; the NLL of each row's completion. The reference path."""
    predicts, targets = _targets(batch)
    with torch.no_grad():
        if delta is None:
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        else:
            with steer(
                model, delta, m=m, positions=positions, prompt_length=batch.prompt_lengths
            ):
                logits = model(
                    input_ids=batch.input_ids, attention_mask=batch.attention_mask
                ).logits
    token_logp = torch.log_softmax(logits.float(), dim=-1)[predicts].gather(-1, targets[:, None])[:, 0]
    return _reduce(token_logp, predicts, reduction)


# -- the fast path: cached block input, rows of multipliers, head at completion positions ------


def block_index_of(model: nn.Module, site: str) -> int:
    """Which decoder block contains the module at ``site``."""
    path, blocks = find_blocks(model)
    prefix = f"{path}." if path else ""
    if site.startswith(prefix):
        head = site[len(prefix) :].split(".", 1)[0]
        if head.isdigit() and int(head) < len(blocks):
            return int(head)
    raise ValueError(f"the site {site!r} is not inside a decoder block ({path}.N)")


def _leaves(module: nn.Module) -> Iterator[nn.Module]:
    for m in module.modules():
        if next(m.children(), None) is None:
            yield m


def _expand(value: Any, batch: int, times: int) -> Any:
    """Repeat batch-shaped tensors (first dim == batch, at least 2-D) ``times`` along dim 0."""
    if times == 1:
        return value
    if isinstance(value, Tensor):
        if value.dim() >= 2 and value.shape[0] == batch:
            return value.repeat(times, *([1] * (value.dim() - 1)))
        return value
    if isinstance(value, tuple):
        return tuple(_expand(v, batch, times) for v in value)
    if isinstance(value, list):
        return [_expand(v, batch, times) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, batch, times) for k, v in value.items()}
    return value


@dataclass
class Captured:
    """One ordinary forward pass: block L's input, every later block's arguments, the logits."""

    hidden: Tensor  # [B, T, d] input of block L
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]]  # args (hidden excluded), kwargs per block
    token_logp: Tensor  # [n] base-model log-probs of completion tokens (m = 0)


@dataclass
class BlockRunner:
    """Runs blocks ``layer..N`` and the output head of a model on a cached block input."""

    model: nn.Module
    layer: int
    blocks: list[nn.Module] = field(init=False)
    tail: list[nn.Module] = field(init=False, default_factory=list)
    softcap: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        _, blocks = find_blocks(self.model)
        self.blocks = list(blocks)
        config = getattr(self.model, "config", None)
        text = config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
        cap = getattr(text, "final_logit_softcapping", None)
        self.softcap = float(cap) if isinstance(cap, int | float) and cap else None

    def capture(self, batch: Batch, predicts: Tensor, targets: Tensor) -> Captured:
        """One forward pass recording block inputs and, the first time, the output head."""
        first = self.layer
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        hidden: dict[str, Tensor] = {}
        tail_calls: list[nn.Module] = []
        after_blocks = {"on": False}
        handles = []

        def pre(index: int) -> Callable[..., None]:
            def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                if index == first:
                    hidden["h"] = args[0]
                calls.append((args[1:], dict(kwargs)))

            return hook

        def last_done(module: nn.Module, args: Any, output: Any) -> None:
            after_blocks["on"] = True

        def leaf_called(module: nn.Module, args: Any, output: Any) -> None:
            if after_blocks["on"]:
                tail_calls.append(module)

        block_ids = {id(m) for b in self.blocks for m in b.modules()}
        try:
            for i in range(first, len(self.blocks)):
                handles.append(self.blocks[i].register_forward_pre_hook(pre(i), with_kwargs=True))
            handles.append(self.blocks[-1].register_forward_hook(last_done))
            if not self.tail:
                for leaf in _leaves(self.model):
                    if id(leaf) not in block_ids:
                        handles.append(leaf.register_forward_hook(leaf_called))
            with torch.no_grad():
                logits = self.model(
                    input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
                ).logits
        finally:
            for h in handles:
                h.remove()
        if not self.tail:
            self.tail = tail_calls
        token_logp = torch.log_softmax(logits.float(), dim=-1)[predicts].gather(
            -1, targets[:, None]
        )[:, 0]
        return Captured(hidden["h"], calls, token_logp)

    def run(
        self, cap: Captured, times: int, predicts: Tensor, targets: Tensor, steering: Steering
    ) -> Tensor:
        """Blocks L..N on the cached input repeated ``times`` as rows; flat completion log-probs
        ordered row by row (all rows of copy 0, then copy 1, ...)."""
        batch = cap.hidden.shape[0]
        h = _expand(cap.hidden, batch, times)
        with torch.no_grad(), steering.calling(batch * times, h.shape[1]):
            for block, (args, kwargs) in zip(self.blocks[self.layer :], cap.calls, strict=True):
                out = block(h, *_expand(args, batch, times), **_expand(kwargs, batch, times))
                h = out[0] if isinstance(out, tuple) else out
            rows = predicts.repeat(times, 1)
            x = h[rows]
            for module in self.tail:
                x = module(x)
            x = x[0] if isinstance(x, tuple) else x
            return _token_logp(x, targets.repeat(times), self.softcap)


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


def _table(ids: Sequence[str], ms: Sequence[float], lp: np.ndarray, ln: np.ndarray, npos: np.ndarray, nneg: np.ndarray) -> pd.DataFrame:
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


def _row_bytes(model: nn.Module, width: int, logit_positions: int) -> int:
    """Rough float32 activation bytes of one sequence row in a forward pass without autograd:
    the widest per-token tensors of a block, attention scores, and the logits (x3 for the
    softmax and its temporaries)."""
    config = getattr(model, "config", None)
    text = config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
    d = int(getattr(text, "hidden_size", 1024) or 1024)
    d_ff = int(getattr(text, "intermediate_size", 4 * d) or 4 * d)
    heads = int(getattr(text, "num_attention_heads", 16) or 16)
    vocab = int(getattr(text, "vocab_size", 50000) or 50000)
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
    encoded = encode_pairs(tokenizer, pairs, include_suffix=include_suffix, system_prompt=system_prompt)
    pad = pad_id(tokenizer)
    buckets = length_buckets(
        encoded,
        lambda w: memory_budget // (2 * _row_bytes(model, w, w)),  # the capture pass: all logits
        max_pairs_per_batch,
    )
    n = len(pairs)
    loss = np.zeros((n, len(grid), 2))
    counts = np.zeros((n, 2), dtype=np.int64)

    runner: BlockRunner | None = None
    use_fast = method == "fast" and delta is not None and any(m != 0.0 for m in grid)
    if use_fast:
        assert delta is not None
        runner = BlockRunner(model, block_index_of(model, delta.site))
    validated = False
    total = sum(len(grid) for _ in buckets)
    bar = tqdm(total=total, desc="sweep", unit="m·batch", disable=not progress)
    try:
        for indices in buckets:
            batch = pair_batch(encoded, indices, pad)
            predicts, targets = _targets(batch)
            rows = 2 * len(indices)
            per_row = predicts.sum(1).cpu()
            counts[indices, 0] = per_row[0::2].numpy()
            counts[indices, 1] = per_row[1::2].numpy()
            if runner is None:
                for j, m in enumerate(grid):
                    nll = naive_losses(model, batch, delta, m, reduction, positions)
                    loss[indices, j, 0] = nll[0::2].numpy()
                    loss[indices, j, 1] = nll[1::2].numpy()
                    bar.update(1)
                continue
            assert delta is not None
            cap = runner.capture(batch, predicts, targets)
            base = _reduce(cap.token_logp, predicts, reduction)
            nonzero = [j for j, m in enumerate(grid) if m != 0.0]
            for j, m in enumerate(grid):
                if m == 0.0:
                    loss[indices, j, 0] = base[0::2].numpy()
                    loss[indices, j, 1] = base[1::2].numpy()
                    bar.update(1)
            if not validated:
                with steer(model, delta, m=0.0) as steering:
                    check = runner.run(cap, 1, predicts, targets, steering)
                err = float((check - cap.token_logp).abs().max()) if check.numel() else 0.0
                if err > 1e-4:
                    log.warning(
                        "unisteer: the fast sweep path does not reproduce %s's forward pass "
                        "(max error %.2e); using the naive path", type(model).__name__, err,
                    )
                    runner = None
                    for j in nonzero:
                        nll = naive_losses(model, batch, delta, grid[j], reduction, positions)
                        loss[indices, j, 0] = nll[0::2].numpy()
                        loss[indices, j, 1] = nll[1::2].numpy()
                        bar.update(1)
                    continue
                validated = True
            row_bytes = _row_bytes(model, batch.input_ids.shape[1], int(per_row.max()))
            step = max(1, memory_budget // (row_bytes * rows))  # multipliers per call
            for start in range(0, len(nonzero), step):
                chunk = nonzero[start : start + step]
                m_rows = torch.tensor([grid[j] for j in chunk]).repeat_interleave(rows)
                prompt = batch.prompt_lengths.repeat(len(chunk))
                with steer(
                    model, delta, m=m_rows, positions=positions, prompt_length=prompt
                ) as steering:
                    token_logp = runner.run(cap, len(chunk), predicts, targets, steering)
                nll = _reduce(token_logp, predicts.repeat(len(chunk), 1), reduction)
                for k, j in enumerate(chunk):
                    part = nll[k * rows : (k + 1) * rows]
                    loss[indices, j, 0] = part[0::2].numpy()
                    loss[indices, j, 1] = part[1::2].numpy()
                bar.update(len(chunk))
    finally:
        bar.close()

    ids = [p.id for p in pairs for _ in grid]
    m_col = [m for _ in pairs for m in grid]
    table = _table(
        ids, m_col, loss[:, :, 0].reshape(-1), loss[:, :, 1].reshape(-1),
        np.repeat(counts[:, 0], len(grid)), np.repeat(counts[:, 1], len(grid)),
    )
    meta = {
        "ms": grid,
        "n_pairs": n,
        "delta": None if delta is None else {"kind": delta.kind, "site": delta.site},
        "include_suffix": include_suffix,
        "positions": positions if isinstance(positions, str) else "mask",
        "method": "fast" if runner is not None else "naive",
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
