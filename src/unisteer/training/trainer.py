"""One trainer for every kind and objective.

>>> delta = train(model, tok, pairs, kind="vector", objective="split", layer=15)

Only the delta's float32 parameters are trained; the model stays frozen and in eval mode (it
is put in eval mode for the run and restored afterwards; its parameters are never touched).
AdamW with weight decay 0, a linear learning-rate decay to 0 without warm-up, gradient-norm
clipping, gradient accumulation, multipliers sampled uniformly from the kind's grid, and one
seed for everything. Each step draws its multipliers from a generator seeded by (seed, epoch,
micro-batch), so a resumed run takes the same path as an uninterrupted one.

A non-finite loss, gradient or parameter stops training with :class:`TrainingDiverged`, which
carries the delta restored to its last good state. Checkpoints (see :mod:`unisteer.checkpoint`)
are written every ``checkpoint_every`` optimiser steps, at the end of every epoch and on
Ctrl-C; ``resume=True`` continues from the last one.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from unisteer._version import __version__
from unisteer.core.create import new_delta
from unisteer.core.delta import KINDS, Delta, Kind
from unisteer.core.sites import middle_layer
from unisteer.data.pairs import PolarityPair
from unisteer.errors import UnisteerError
from unisteer.replay.stacked import StackedRunner
from unisteer.scoring.grid import symmetric_grid
from unisteer.training.batches import (
    Method,
    PrepareCache,
    TrainBatch,
    prepare,
    rows_per_pass,
    scores,
)
from unisteer.training.checkpoint import (
    LoopState,
    deferred_interrupt,
    has_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from unisteer.training.config import TrainConfig, make_config
from unisteer.training.objectives import Objective, diffmean, make_objective

log = logging.getLogger(__name__)


class TrainingDiverged(UnisteerError):
    """The loss, a gradient or a parameter became NaN or inf; ``delta`` holds the last good
    parameters (those of the last step whose loss was finite)."""

    def __init__(self, message: str, delta: Delta) -> None:
        super().__init__(message)
        self.delta = delta


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def step_generator(seed: int, epoch: int, micro: int) -> torch.Generator:
    """The generator of micro-batch ``micro`` of ``epoch``: seeded by all three, so a resumed
    run draws the same multipliers as an uninterrupted one."""
    return torch.Generator().manual_seed(((seed * 1_000_003) ^ (epoch * 10_007 + micro)) % (2**62))


def multiplier_drawer(grid: Sequence[float], generator: torch.Generator) -> Callable[[int], Tensor]:
    """``draw(n)``: ``n`` training multipliers drawn uniformly (with replacement) from ``grid``,
    a float32 ``[n]`` tensor, consuming only ``generator``."""
    values = torch.tensor(list(grid), dtype=torch.float32)

    def draw(n: int) -> Tensor:
        return values[torch.randint(len(values), (n,), generator=generator)]

    return draw


def objective_loss(
    model: nn.Module,
    objective: Objective,
    tb: TrainBatch,
    delta: Delta,
    grid: Sequence[float],
    generator: torch.Generator,
    runner: StackedRunner | None,
    config: TrainConfig,
    per_pass: int | None = None,
) -> Tensor:
    """The loss of ``objective`` on the micro-batch ``tb`` under ``delta``, its multipliers
    drawn from ``grid`` with ``generator`` (:func:`multiplier_drawer`); what every training and
    validation step computes (differentiable in the delta's parameters when autograd is on).
    ``per_pass`` bounds the rows of one forward pass (:func:`~unisteer.training.batches.scores`)."""
    rows = objective.rows(tb.n_pairs, multiplier_drawer(grid, generator), delta.kind)
    return objective.loss(rows, scores(model, tb, delta, rows, runner, config.positions, per_pass))


def _validate(
    model: nn.Module,
    objective: Objective,
    batches: list[TrainBatch],
    delta: Delta,
    grid: Sequence[float],
    runner: StackedRunner | None,
    config: TrainConfig,
    per_pass: int | None = None,
) -> float:
    gen = torch.Generator().manual_seed(config.seed + 7919)
    total, n = 0.0, 0
    with torch.no_grad():
        for tb in batches:
            loss = objective_loss(model, objective, tb, delta, grid, gen, runner, config, per_pass)
            total += float(loss) * tb.n_pairs
            n += tb.n_pairs
    return total / n


def _finite(tensors: Sequence[Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def train(
    model: nn.Module,
    tokenizer: Any,
    pairs: Sequence[PolarityPair],
    *,
    kind: Kind = "vector",
    objective: str = "split",
    layer: int | None = None,
    site: str | None = None,
    preset: str | None = None,
    val_pairs: Sequence[PolarityPair] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    max_steps: int | None = None,
    method: Method = "cached",
    system_prompt: str | None = None,
    progress: bool = True,
    cache: PrepareCache | None = None,
    **hparams: Any,
) -> Delta:
    """Train a delta of ``kind`` at ``layer`` (default: the middle block) with ``objective``.

    Args:
        model, tokenizer: a Hugging Face causal LM and its tokenizer (the model is not
            modified).
        pairs: training pairs; ``val_pairs``: optional held-out pairs, scored every epoch.
        kind: ``"vector"``, ``"lora"`` or ``"local_weight"``.
        objective: ``"diffmean"`` (vector only, closed form), ``"sft"``, ``"reps"`` or
            ``"split"``.
        site: a site path overriding the default (see :func:`unisteer.resolve_site`).
        preset: one of :data:`unisteer.train_config.PRESETS` (the paper's settings).
        checkpoint_dir: where checkpoints go; ``resume=True`` continues from one there.
        max_steps: stop (with a checkpoint) after this many optimiser steps in total.
        method: ``"cached"`` (fast, default) or ``"naive"`` (a full hooked forward per step).
        cache: a dict in which the captured minibatches are kept, so that later runs at the
            same block on the same pairs (other objectives and kinds) skip the capture.
        **hparams: any :class:`~unisteer.train_config.TrainConfig` field (lr, epochs,
            batch_size, grad_accum, multipliers, bidirectional, lambda_n, gamma, ...).

    Returns:
        The trained delta. ``delta.meta`` records the objective, every hyper-parameter, the
        training multipliers, the sweep grid (±1.5 × the largest training multiplier), the
        per-step history and the per-epoch validation loss.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    layer = middle_layer(model) if layer is None else layer
    config = make_config(preset, **hparams)
    if objective == "diffmean":
        if kind != "vector":
            raise ValueError("diffmean makes vectors only; use kind='vector'")
        return diffmean(
            model,
            tokenizer,
            pairs,
            layer=layer,
            site=site,
            batch_size=config.batch_size,
            include_suffix=config.include_suffix,
            system_prompt=system_prompt,
            progress=progress,
        )
    obj = make_objective(objective, **config.objective_options(objective))
    grid = config.grid(kind)
    delta = new_delta(
        model,
        kind,
        layer,
        site=site,
        rank=config.rank,
        tokenizer=tokenizer,
        init_std=_init_std(model, kind, config),
        seed=config.seed,
    )
    with _eval_mode(model):
        batches, runner = prepare(
            model,
            tokenizer,
            pairs,
            delta,
            batch_size=config.batch_size,
            seed=config.seed,
            method=method,
            positions=config.positions,
            include_suffix=config.include_suffix,
            system_prompt=system_prompt,
            progress=progress,
            cache=cache,
        )
        val_batches = (
            prepare(
                model,
                tokenizer,
                val_pairs,
                delta,
                batch_size=config.batch_size,
                seed=config.seed,
                method="cached" if runner is not None else "naive",
                positions=config.positions,
                include_suffix=config.include_suffix,
                system_prompt=system_prompt,
                progress=False,
                cache=cache,
            )[0]
            if val_pairs
            else []
        )
        loop = _run(
            model,
            delta,
            obj,
            batches,
            val_batches,
            grid,
            runner,
            config,
            objective=objective,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            max_steps=max_steps,
            progress=progress,
        )
    top = max(grid)
    delta.meta.update(
        {
            "objective": objective,
            "hparams": config.to_dict(),
            "preset": preset,
            "train_multipliers": list(grid),
            "grid": symmetric_grid(1.5 * top, 21),
            "n_pairs": len(pairs),
            "n_val_pairs": len(val_pairs or []),
            "method": "cached" if runner is not None else "naive",
            "steps": loop.step,
            "history": loop.history,
            "validation": loop.validation,
            "unisteer_version": __version__,
        }
    )
    return delta


def _init_std(model: nn.Module, kind: Kind, config: TrainConfig) -> float:
    """Vectors start small and random (so RePS's null intervention has a direction):
    N(0, 1/d) per coordinate, i.e. a norm of about 1, unless ``init_std`` is given."""
    if kind != "vector":
        return 0.0
    if config.init_std is not None:
        return config.init_std
    from unisteer.core.sites import hidden_size

    return 1.0 / math.sqrt(hidden_size(model))


def _run(
    model: nn.Module,
    delta: Delta,
    obj: Objective,
    batches: list[TrainBatch],
    val_batches: list[TrainBatch],
    grid: Sequence[float],
    runner: StackedRunner | None,
    config: TrainConfig,
    *,
    objective: str,
    checkpoint_dir: str | Path | None,
    resume: bool,
    max_steps: int | None,
    progress: bool,
) -> LoopState:
    params = list(delta.parameters())
    # Rows per forward pass, from the memory free on the blocks' devices (never the minibatch).
    per_pass = rows_per_pass(model, [*batches, *val_batches], runner)
    if per_pass is not None:
        draw = multiplier_drawer(grid, torch.Generator())  # the count of rows is all we need
        most = max(len(obj.rows(tb.n_pairs, draw, delta.kind)) for tb in batches)
        if most > per_pass:
            log.info(
                "a minibatch of %d rows runs in passes of %d rows (the memory free on the "
                "devices running the blocks)",
                most,
                per_pass,
            )
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate(delta.kind), weight_decay=0.0)
    n_micro = len(batches)
    ga = config.grad_accum
    steps_per_epoch = math.ceil(n_micro / ga)
    total_steps = config.epochs * steps_per_epoch
    identity = {
        **config.to_dict(),
        "objective": objective,
        "kind": delta.kind,
        "site": delta.site,
        "n_batches": n_micro,
        "pairs": sorted(i for tb in batches for i in tb.ids),
    }
    identity.pop("checkpoint_every")
    loop = LoopState()
    if resume:
        if checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir")
        if has_checkpoint(checkpoint_dir):
            loop = load_checkpoint(checkpoint_dir, delta, optimizer, identity)
    done_steps = loop.step  # the schedule continues where the checkpoint left it
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: max(0.0, 1.0 - (s + done_steps) / total_steps)
    )

    def checkpoint() -> None:
        if checkpoint_dir is not None:
            with deferred_interrupt():  # both files, or neither
                save_checkpoint(checkpoint_dir, delta, optimizer, loop, identity)

    done_micro = loop.epoch * n_micro + loop.micro
    bar = tqdm(
        total=config.epochs * n_micro,
        initial=done_micro,
        desc=f"train {delta.kind}/{objective}",
        unit="batch",
        disable=not progress,
    )
    previous = [p.detach().clone() for p in params]
    group_losses: list[float] = []
    try:
        for epoch in range(loop.epoch, config.epochs):
            order = list(range(n_micro))
            random.Random(config.seed * 7_777 + epoch).shuffle(order)
            for i in range(loop.micro, n_micro):
                if max_steps is not None and loop.step >= max_steps:
                    checkpoint()
                    return loop
                tb = batches[order[i]]
                group_start = (i // ga) * ga
                group_size = min(ga, n_micro - group_start)
                gen = step_generator(config.seed, epoch, i)
                with torch.enable_grad():
                    loss = objective_loss(
                        model, obj, tb, delta, grid, gen, runner, config, per_pass
                    )
                    if not torch.isfinite(loss):
                        _diverged(
                            delta, previous, f"the loss is {float(loss.detach())}", epoch, loop, 1
                        )
                    (loss / group_size).backward(inputs=params)
                group_losses.append(float(loss.detach()))
                bar.update(1)
                if i + 1 - group_start < group_size:
                    continue
                norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                if not torch.isfinite(norm):
                    _diverged(
                        delta, previous, f"the gradient norm is {float(norm)}", epoch, loop, 1
                    )
                # The step and the counters recording it happen together (see
                # deferred_interrupt), so a checkpoint never pairs step k with step k + 1.
                with deferred_interrupt():
                    previous = [p.detach().clone() for p in params]
                    lr = optimizer.param_groups[0]["lr"]
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    if not _finite(params):
                        _diverged(delta, previous, "a parameter became non-finite", epoch, loop, 0)
                    loop.step += 1
                    loop.micro = i + 1
                    loop.history.append(
                        {
                            "step": loop.step,
                            "epoch": epoch,
                            "loss": sum(group_losses) / len(group_losses),
                            "lr": lr,
                            "grad_norm": float(norm),
                        }
                    )
                group_losses = []
                bar.set_postfix(loss=f"{loop.history[-1]['loss']:.4f}")
                if loop.step % config.checkpoint_every == 0:
                    checkpoint()
            # The epoch counts as done only after its validation: a run interrupted while
            # validating resumes at (epoch, last micro-batch) and validates again.
            if val_batches:
                val = _validate(model, obj, val_batches, delta, grid, runner, config, per_pass)
                loop.validation.append({"epoch": epoch, "step": loop.step, "loss": val})
                bar.set_postfix(loss=f"{loop.history[-1]['loss']:.4f}", val=f"{val:.4f}")
            loop.epoch, loop.micro = epoch + 1, 0
            checkpoint()
    except KeyboardInterrupt:
        # The parameters are those after the last optimiser step and ``loop`` points at the
        # first micro-batch after it, so a resumed run redoes the interrupted group exactly.
        for p in params:
            p.grad = None
        checkpoint()
        raise
    finally:
        bar.close()
    return loop


def _diverged(
    delta: Delta,
    previous: list[Tensor],
    what: str,
    epoch: int,
    loop: LoopState,
    steps_back: int,
) -> None:
    """Restore ``previous`` (the parameters before the last optimiser step taken) and raise.

    ``steps_back`` is 1 when the current parameters gave the non-finite loss or gradient (so
    they are suspect too), 0 when the step that just failed was never kept.
    """
    with torch.no_grad():
        for p, good in zip(delta.parameters(), previous, strict=True):
            p.copy_(good)
            p.grad = None
    kept = max(0, loop.step - steps_back)
    raise TrainingDiverged(
        f"training diverged at epoch {epoch}, optimiser step {loop.step + 1}: {what}. The delta "
        f"keeps its parameters after step {kept}, the last whose loss and gradients were "
        "finite. Try a lower learning rate (lr) or smaller multipliers.",
        delta,
    )
