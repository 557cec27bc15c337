"""The one exactness check a fast path passes before it is trusted.

The fast paths (the sweep's replay, the trainer's cached blocks) compute the same numbers as
the ordinary forward pass in another order, so rounding makes them differ slightly. A path is
used on a model only when, on the first batch, its capture and a replay of **several
multipliers in one expanded batch** (``CHECK_MS``: m = 0, a non-zero m, m = 0 again, the
layout every later call has) reproduce the ordinary forward pass's completion NLL sums at the
m = 0 rows to within

    |fast − ordinary| ≤ max(ABS_TOL, SPREAD_FACTOR · spread) + REL_TOL · |ordinary|

per completion. ``ABS_TOL`` (1e-4 nats) plus one part in a million is float32 rounding on sums
of a few hundred nats (the SPEC's target for the sweep is 1e-4 in log-odds). ``spread`` is
the dtype's own rounding, measured rather than assumed: for a model whose parameters are not
float32 (bfloat16, float16), the self-check also runs the ordinary forward pass on the same
pairs batched differently (two halves) and takes the largest change of an NLL sum; in
float32 it is not measured (0). A fast path is thus held to the naive path's own
reproducibility in the model's dtype, never to less than float32's bar. The m = 0 rows sit
next to a steered row, so a replay that mixes rows of different multipliers, or expands a
per-row argument wrongly (e.g. ALiBi's ``[batch·heads, 1, T]``), fails here and is not used:
the caller warns and takes the naive path. A fast path that cannot prove itself exact never
returns numbers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from unisteer.core.positions import PositionMode
from unisteer.core.steering_set import Steerable
from unisteer.data.tokens import Batch, collate, pair_batch
from unisteer.model.memory import on_model_device
from unisteer.replay.base import ReplayInput, Runner
from unisteer.replay.logprob import completion_targets, row_nll, token_logprobs

log = logging.getLogger(__name__)

ABS_TOL = 1e-4
REL_TOL = 1e-6
SPREAD_FACTOR = 2.0
#: The multipliers of the self-check's replay; rows at m = 0 are compared.
CHECK_MS = (0.0, 1.0, 0.0)


def excess(candidate: Tensor, reference: Tensor, spread: float = 0.0) -> float:
    """The largest amount by which ``candidate`` misses ``reference`` beyond the tolerance
    (``spread``: the naive path's own rounding, see the module doc); ``<= 0`` means within it.
    A non-finite difference is infinitely far."""
    diff = (candidate.double() - reference.double()).abs()
    if not bool(torch.isfinite(diff).all()):
        return math.inf
    limit = max(ABS_TOL, SPREAD_FACTOR * spread) + REL_TOL * reference.double().abs()
    return float((diff - limit).max())


def ordinary_nll(model: nn.Module, batch: Batch) -> Tensor:
    """``[rows]`` completion NLL sums of one plain ``model(...)`` call on ``batch`` (float64,
    CPU): the reference every fast path is checked against."""
    predicts, targets = completion_targets(batch)
    with torch.no_grad():
        inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        logits = model(**on_model_device(model, inputs)).logits
    return row_nll(token_logprobs(logits[predicts], targets), predicts)


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (float32 when it has none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def batching_spread(model: nn.Module, inputs: ReplayInput, reference: Tensor) -> float:
    """How much the ordinary forward pass's NLL sums of ``inputs`` (``reference``: the whole
    batch at once) move when the same pairs run as two halves: the dtype's own rounding.
    0.0 for float32 models (not measured: float32's bar is ``ABS_TOL``)."""
    if model_dtype(model) == torch.float32:
        return 0.0
    n = len(inputs.encoded)
    if n >= 2:
        halves = [list(range(n // 2)), list(range(n // 2, n))]
        parts = [ordinary_nll(model, pair_batch(inputs.encoded, h, inputs.pad)) for h in halves]
        split = torch.cat(parts)
    else:  # one pair: its two rows alone
        split = torch.cat(
            [ordinary_nll(model, collate([e], inputs.pad)) for e in inputs.encoded[0]]
        )
    spread = float((split - reference.double()).abs().max())
    log.info("unisteer: the ordinary forward pass moves by %.2e across batchings", spread)
    return spread if math.isfinite(spread) else 0.0


def replay_excess(
    runner: Runner[Any],
    cap: Any,
    delta: Steerable,
    positions: PositionMode,
    reference: Tensor | None = None,
    *,
    spread: float = 0.0,
    what: str = "sweep",
    model_name: str = "this model",
) -> float:
    """How far ``runner``'s capture ``cap`` and its replay of ``CHECK_MS`` (the m = 0 rows)
    miss ``reference`` (the ordinary forward pass's ``[2P]`` NLL sums; ``None``: the capture's
    own ``base`` is the ordinary forward pass) beyond the tolerance: ``<= 0`` means the runner
    may be trusted, ``inf`` that the replay failed on this architecture."""
    try:
        with torch.no_grad():
            got = runner.run(cap, delta, list(CHECK_MS), positions)
    except Exception as e:  # an architecture the replay does not understand
        log_failed(f"{runner.name} {what}", model_name, e)
        return math.inf
    ref = cap.base if reference is None else reference
    zeros = [i for i, m in enumerate(CHECK_MS) if m == 0.0]
    err = max(excess(cap.base, ref, spread), *(excess(got[i], ref, spread) for i in zeros))
    log_excess(f"{runner.name} {what}", model_name, err)
    return err


def log_failed(path: str, model_name: str, error: Exception) -> None:
    """Say (at INFO) that the fast ``path`` (e.g. "prefix sweep") raised on this model."""
    log.info("unisteer: the %s path failed on %s: %s", path, model_name, error)


def log_excess(path: str, model_name: str, err: float) -> None:
    """Say (at INFO) by how much the fast ``path`` missed its tolerance, when it did."""
    if err > 0.0:
        log.info("unisteer: the %s path exceeds its tolerance by %.2e on %s", path, err, model_name)


def warn_naive(what: str, model_name: str) -> None:
    log.warning(
        "unisteer: no fast %s path reproduces %s's forward pass; using the naive path",
        what,
        model_name,
    )


def exact_runner(
    candidates: Sequence[Runner[Any]],
    inputs: ReplayInput,
    delta: Steerable,
    positions: PositionMode,
    reference: Tensor | None = None,
    *,
    spread: float = 0.0,
    what: str = "sweep",
    model_name: str = "this model",
) -> tuple[Runner[Any], Any] | None:
    """The first runner of ``candidates`` that captures ``inputs`` and passes
    :func:`replay_excess`, with its capture; ``None`` (and a warning) when none does."""
    for runner in candidates:
        try:
            cap = runner.capture(inputs)
        except Exception as e:  # an architecture the replay does not understand
            log_failed(f"{runner.name} {what}", model_name, e)
            continue
        if cap is None:
            continue
        err = replay_excess(
            runner, cap, delta, positions, reference, spread=spread, what=what,
            model_name=model_name,
        )  # fmt: skip
        if err <= 0.0:
            return runner, cap
    warn_naive(what, model_name)
    return None
