"""The one exactness check a fast path passes before it is trusted.

The fast paths (the sweep's replay, the trainer's cached blocks) compute the same numbers as
the ordinary forward pass in another order, so float32 rounding makes them differ slightly.
A path is used on a model only when, at m = 0 on the first batch, both its capture and a
replay reproduce the ordinary forward pass's completion NLL sums to within

    |fast − ordinary| ≤ ABS_TOL + REL_TOL · |ordinary|      (per completion)

(1e-4 nats plus one part in a million of the sum: sums of a few hundred nats in float32 differ
by rounding at about that level; the SPEC's target for the sweep is 1e-4 in log-odds).
Otherwise the caller warns and takes the naive path: a fast path that cannot prove itself
exact never returns numbers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from unisteer.core.delta import Delta
from unisteer.core.positions import PositionMode
from unisteer.replay.base import ReplayInput, Runner

log = logging.getLogger(__name__)

ABS_TOL = 1e-4
REL_TOL = 1e-6


def excess(candidate: Tensor, reference: Tensor) -> float:
    """The largest amount by which ``candidate`` misses ``reference`` beyond the tolerance;
    ``<= 0`` means within it."""
    limit = ABS_TOL + REL_TOL * reference.abs()
    return float(((candidate - reference).abs() - limit).max())


def replay_excess(
    runner: Runner[Any],
    cap: Any,
    delta: Delta,
    positions: PositionMode,
    reference: Tensor | None = None,
    *,
    what: str = "sweep",
    model_name: str = "this model",
) -> float:
    """How far ``runner``'s capture ``cap`` and its replay at m = 0 miss ``reference`` (the
    ordinary forward pass's ``[2P]`` NLL sums; ``None``: the capture's own ``base`` is the
    ordinary forward pass) beyond the tolerance: ``<= 0`` means the runner may be trusted,
    ``inf`` that the replay failed on this architecture."""
    try:
        with torch.no_grad():
            zero = runner.run(cap, delta, [0.0], positions)[0]
    except Exception as e:  # an architecture the replay does not understand
        log.info("unisteer: the %s %s path failed on %s: %s", runner.name, what, model_name, e)
        return math.inf
    ref = cap.base if reference is None else reference
    err = max(excess(cap.base, ref), excess(zero, ref))
    if err > 0.0:
        log.info(
            "unisteer: the %s %s path exceeds its tolerance by %.2e on %s",
            runner.name,
            what,
            err,
            model_name,
        )
    return err


def warn_naive(what: str, model_name: str) -> None:
    log.warning(
        "unisteer: no fast %s path reproduces %s's forward pass; using the naive path",
        what,
        model_name,
    )


def exact_runner(
    candidates: Sequence[Runner[Any]],
    inputs: ReplayInput,
    delta: Delta,
    positions: PositionMode,
    reference: Tensor | None = None,
    *,
    what: str = "sweep",
    model_name: str = "this model",
) -> tuple[Runner[Any], Any] | None:
    """The first runner of ``candidates`` that captures ``inputs`` and passes
    :func:`replay_excess`, with its capture; ``None`` (and a warning) when none does."""
    for runner in candidates:
        try:
            cap = runner.capture(inputs)
        except Exception as e:  # an architecture the replay does not understand
            log.info("unisteer: the %s %s path failed on %s: %s", runner.name, what, model_name, e)
            continue
        if cap is None:
            continue
        err = replay_excess(
            runner, cap, delta, positions, reference, what=what, model_name=model_name
        )
        if err <= 0.0:
            return runner, cap
    warn_naive(what, model_name)
    return None
