"""Running an experiment: train → sweep (train and test) → fit → evaluate → report.

Every stage is cached in the output folder, keyed by its inputs (see
:mod:`unisteer.experiment.stages`): a rerun skips what is done, an interrupted training run
resumes from its checkpoint, and changing one method's settings reruns that method only.

    from unisteer.experiment import load_experiment, run_experiment
    results = run_experiment(load_experiment("default"))  # ExperimentResults
    results.to_dict()  # what results.json holds

The stages pass typed results (:mod:`unisteer.report.results`) to one another in memory; a
stage's files are read back only when a rerun skips it.
"""

from __future__ import annotations

import json
import platform
import random
import resource
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from unisteer._version import __version__
from unisteer.core.delta import Delta
from unisteer.core.fingerprint import model_fingerprint
from unisteer.core.io import load_delta, save_delta
from unisteer.core.sites import find_blocks, middle_layer
from unisteer.data.conversation import query_text
from unisteer.data.pairs import PairSet
from unisteer.data.sources import load_pairs
from unisteer.data.tokens import within_limit
from unisteer.errors import UsageError
from unisteer.evaluate.gains import measured_gains, pair_gains
from unisteer.experiment import distributed
from unisteer.experiment.concepts import Concept, concept_dir, concepts_of, for_concept
from unisteer.experiment.config import Experiment, MethodSpec, resolve_layers
from unisteer.experiment.control_stage import control_stage
from unisteer.experiment.distributed import World, world_from_env
from unisteer.experiment.stages import Stage, digest
from unisteer.files import (
    OutputLock,
    check_output_dir,
    write_json_atomic,
    write_parquet_atomic,
    write_text_atomic,
)
from unisteer.fit import FitError, choose_multiplier, fit_sweep
from unisteer.fit.margin import POINT_LEVEL, margin_for
from unisteer.fit.refine import default_tolerance, refinement_points
from unisteer.generation import generate
from unisteer.model.config import token_limit
from unisteer.model.load import load_model
from unisteer.replay.cache import ReplayCache
from unisteer.report.concepts import (
    ConceptRun,
    ConceptsResults,
    concept_table,
    method_table,
    write_concepts_report,
)
from unisteer.report.fit_outputs import fit_tables, write_fit_outputs
from unisteer.report.results import (
    EVAL_RESULT,
    FIT_RESULT,
    PAIR_GAINS,
    DataCounts,
    EvalResult,
    ExperimentResults,
    ExperimentSettings,
    FitOutcome,
    MethodResult,
    ModelInfo,
    Sample,
    SweepTables,
    TrainingSummary,
)
from unisteer.scoring.grid import parse_grid, symmetric_grid
from unisteer.scoring.sweep import sweep
from unisteer.scoring.table import SweepResult
from unisteer.training.batches import PrepareCache
from unisteer.training.trainer import train

Log = Callable[[str], None]

SAMPLES_FILE = "samples.json"


REFINE_STARTS = 8  # fit starts of an adaptive round (it only places points)


def _pairs_digest(pairs: PairSet) -> str:
    return digest([(p.id, p.query, p.positive, p.negative) for p in pairs])


def _shuffled(pairs: PairSet, seed: int, limit: int | None) -> PairSet:
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    chosen = order if limit is None else order[:limit]
    return PairSet([pairs[i] for i in chosen], name=pairs.name)


def _marked_digest(marker: Path) -> str | None:
    """The stage digest a checkpoint folder was made for (``key.json``), or ``None``."""
    try:
        value = json.loads(marker.read_text(encoding="utf-8")).get("digest")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError, RecursionError):
        return None
    return value if isinstance(value, str) else None


def select_data(exp: Experiment, pairs: PairSet) -> dict[str, PairSet]:
    """The training pairs, the swept training pairs and the swept test pairs."""
    train_all, test_all = pairs.train_test(test_size=exp.test_fraction, seed=exp.seed)
    train_set = _shuffled(train_all, exp.seed, exp.train_pairs)
    test_set = _shuffled(test_all, exp.seed + 1, exp.test_pairs)
    limit = exp.sweep_train_pairs
    sweep_train = train_set if limit is None else PairSet(train_set[:limit], name=train_set.name)
    return {"train": train_set, "sweep_train": sweep_train, "test": test_set}


def _grid(method: MethodSpec, delta: Delta, points: int) -> list[float]:
    if method.grid is not None:
        return parse_grid(method.grid)
    stored = delta.meta.get("grid")
    if not isinstance(stored, list) or not stored:
        raise ValueError(f"{method.name}: the delta records no sweep grid; give `grid`")
    return symmetric_grid(max(abs(float(x)) for x in stored), points)


def _versions() -> dict[str, str]:
    import transformers

    return {
        "unisteer": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_threads": str(torch.get_num_threads()),
    }


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _Runner:
    def __init__(
        self,
        exp: Experiment,
        out: Path,
        pairs: PairSet,
        model: Any,
        tokenizer: Any,
        progress: bool,
        log: Log,
        transfer: PairSet | None = None,
    ) -> None:
        self.exp, self.out, self.model, self.tok = exp, out, model, tokenizer
        self.progress, self.log = progress, log
        self.cache = PrepareCache()
        # Every sweep of the experiment shares the fast path's self-check and the captures
        # (the same pairs at the same layer, for every method and adaptive round).
        self.replay = ReplayCache(model)
        self.fingerprint = model_fingerprint(model, tokenizer)
        self.layer = exp.layer if exp.layer is not None else middle_layer(model)
        self.limit = token_limit(model, exp.max_tokens)

        def usable(found: PairSet) -> PairSet:
            return within_limit(
                tokenizer,
                found,
                self.limit,
                strict=not exp.lenient,
                include_suffix=exp.include_suffix,
            )

        pairs = usable(pairs)
        self.skipped = tuple(str(p) for p in pairs.problems)
        if self.skipped:
            log(
                f"skipped {len(self.skipped)} unusable or over-long rows of {exp.data} "
                "(listed in results.json, data.skipped)"
            )
        self.data = select_data(exp, pairs)
        if transfer is not None:
            self.data["transfer"] = _shuffled(usable(transfer), exp.seed + 2, exp.transfer_pairs)

    def layer_of(self, method: MethodSpec) -> int:
        """The block ``method`` steers: its own ``layer``, else the experiment's."""
        return method.layer if method.layer is not None else self.layer

    def _sweep(self, pairs: PairSet, delta: Delta, ms: list[float], progress: bool) -> SweepResult:
        """``pairs`` at ``ms`` under the experiment's scoring settings, through the shared
        replay cache (every sweep and evaluation of the run goes through here)."""
        return sweep(
            self.model,
            self.tok,
            pairs,
            delta,
            ms,
            reduction=self.exp.reduction,  # type: ignore[arg-type]
            include_suffix=self.exp.include_suffix,
            positions=self.exp.positions,  # type: ignore[arg-type]
            progress=progress,
            cache=self.replay,
        )

    # -- stages -----------------------------------------------------------------------------

    def train_stage(self, method: MethodSpec, mdir: Path) -> tuple[Delta, Stage]:
        config = self.exp.method_config(method)
        key = {
            "stage": "train",
            "version": __version__,
            "model": self.exp.model,
            "fingerprint": self.fingerprint,
            "layer": self.layer_of(method),
            "kind": method.kind,
            "objective": method.objective,
            "preset": method.preset,
            "config": config.to_dict(),
            "pairs": _pairs_digest(self.data["train"]),
        }
        stage = Stage(mdir / "delta", key)
        if stage.done():
            self.log(f"  train: done before ({stage.info().get('seconds', 0):.0f} s)")
            return load_delta(stage.directory, self.model, tokenizer=self.tok), stage
        checkpoint = mdir / "checkpoint"
        marker = checkpoint / "key.json"
        if checkpoint.exists() and _marked_digest(marker) != stage.digest:
            shutil.rmtree(checkpoint)  # made under other settings, or its marker is unreadable
        checkpoint.mkdir(parents=True, exist_ok=True)
        write_text_atomic(marker, json.dumps({"digest": stage.digest}) + "\n")
        stage.start()
        hp = {k: v for k, v in config.to_dict().items() if k != "checkpoint_every"}
        hp.pop("seed")
        delta = train(
            self.model,
            self.tok,
            self.data["train"],
            kind=method.kind,  # type: ignore[arg-type]
            objective=method.objective,
            layer=self.layer_of(method),
            checkpoint_dir=checkpoint,
            resume=True,
            progress=self.progress,
            cache=self.cache,
            seed=config.seed,
            **hp,
        )
        delta.meta["method"] = method.name
        save_delta(delta, stage.directory)
        seconds = stage.finish(steps=delta.meta.get("steps"))
        self.log(f"  train: {seconds:.0f} s")
        return delta, stage

    def sweep_stage(
        self,
        method: MethodSpec,
        mdir: Path,
        delta: Delta,
        after: Stage,
        split: str,
        grid: list[float] | None = None,
    ) -> tuple[SweepTables, Stage, list[float]]:
        """Sweep ``split``'s pairs over the grid (``grid``, else the method's); the tables in
        memory (read back from disk only when the stage was done before). With
        ``[sweep] adaptive`` the train sweep adds points where the choice of m is decided
        (:mod:`unisteer.fit.refine`) and returns the grid it ended with."""
        grid = grid if grid is not None else _grid(method, delta, self.exp.sweep_points)
        pairs = self.data["sweep_train" if split == "train" else "test"]
        adaptive = self.exp.adaptive and split == "train"
        key = {
            "stage": f"sweep_{split}",
            "after": after.content_digest,
            "grid": grid,
            "pairs": _pairs_digest(pairs),
            "reduction": self.exp.reduction,
            "include_suffix": self.exp.include_suffix,
            "positions": self.exp.positions,
        }
        if adaptive:
            key["adaptive"] = {
                "rounds": self.exp.refine_rounds,
                "max_util_drop": self.exp.max_util_drop,
                "starts": self.exp.fit_starts,
                **self._level_key(),
            }
        stage = Stage(mdir / f"sweep_{split}", key)
        if stage.done():
            self.log(f"  sweep {split}: done before")
            tables = SweepTables.load(stage.directory)
            return tables, stage, sorted(float(x) for x in tables.table["m"].unique())
        stage.start()

        def run(ms: list[float]) -> SweepResult:
            return self._sweep(pairs, delta, ms, self.progress)

        result = run(grid)
        added: list[dict[str, Any]] = []
        if adaptive:
            result, added = self._refine(result, grid, run)
        result.save(stage.directory)
        info = {"method": result.meta["method"], "added": added}
        seconds = stage.finish(**info)
        more = f", {len(added)} points added" if adaptive else ""
        self.log(f"  sweep {split}: {seconds:.0f} s{more}")
        return SweepTables.of(result), stage, sorted(float(x) for x in result.table["m"].unique())

    def _level_key(self) -> dict[str, float]:
        """The budget level in a stage key, only when it is not the point rule (0.5), so that
        stages made before the level existed stay valid."""
        level = self.exp.budget_level
        return {} if level == POINT_LEVEL else {"budget_level": level}

    def _refine(
        self, result: SweepResult, grid: list[float], run: Callable[[list[float]], SweepResult]
    ) -> tuple[SweepResult, list[dict[str, Any]]]:
        """The adaptive rounds: fit, ask :func:`refinement_points` where to measure, measure
        there, until a round adds nothing or ``refine_rounds`` are done. The table gains an
        ``added`` column: the round (0 for the coarse grid) and ``reason`` for every row."""
        tol = default_tolerance(grid)
        table = result.table.assign(added=0, reason="coarse grid")
        added: list[dict[str, Any]] = []
        for round_ in range(1, self.exp.refine_rounds + 1):
            current = replace(result, table=table)
            means = current.means()
            margin = margin_for(table, self.exp.budget_level)
            try:
                # Only to place points: at most REFINE_STARTS starts (the final fit, in
                # fit_stage, uses the experiment's own number).
                fitted = fit_sweep(
                    table, n_starts=min(self.exp.fit_starts, REFINE_STARTS), strict=False
                )
                choice = (
                    choose_multiplier(fitted, self.exp.max_util_drop, margin=margin)
                    if fitted.converged
                    else None
                )
            except FitError:
                break
            points = refinement_points(
                fitted,
                means["m"].to_numpy(),
                means["util_odds"].to_numpy(),
                max_util_drop=self.exp.max_util_drop,
                tol=tol,
                choice=choice,
                margin=margin,
            )
            if not points:
                break
            more = run([r.m for r in points]).table
            reasons = {r.m: r.reason for r in points}
            more = more.assign(added=round_, reason=[reasons[float(x)] for x in more["m"]])
            table = pd.concat([table, more], ignore_index=True)
            added += [{**r.to_dict(), "round": round_, "tolerance": tol} for r in points]
        order = {pid: i for i, pid in enumerate(dict.fromkeys(table["pair_id"]))}
        table = (
            table.assign(_order=table["pair_id"].map(order))
            .sort_values(["_order", "m"], kind="stable")
            .drop(columns="_order")
            .reset_index(drop=True)
        )
        ms = sorted(float(x) for x in table["m"].unique())
        return replace(result, table=table, meta={**result.meta, "ms": ms, "added": added}), added

    def fit_stage(
        self, mdir: Path, sweeps: list[tuple[SweepTables, Stage]]
    ) -> tuple[FitOutcome, Stage]:
        """Fit the train and test sweeps (``sweeps``, in that order) and choose m on the train
        fit; ``fits.json`` and the plots go to the stage's folder."""
        (train, s_train), (test, s_test) = sweeps
        key = {
            "stage": "fit",
            "after": [s_train.content_digest, s_test.content_digest],
            "starts": self.exp.fit_starts,
            "max_util_drop": self.exp.max_util_drop,
            **self._level_key(),
        }
        stage = Stage(mdir / "fit", key)
        if stage.done():
            self.log("  fit: done before")
            return FitOutcome.load(stage.directory), stage
        stage.start()
        try:
            fitted = fit_tables(
                train.table,
                test.table,
                train_source=s_train.directory / "sweep.parquet",
                test_source=s_test.directory / "sweep.parquet",
                max_util_drop=self.exp.max_util_drop,
                n_starts=self.exp.fit_starts,
                seed=self.exp.seed,
                budget_level=self.exp.budget_level,
            )
            # one frontier of every method in the report, none per method (about 0.6 s each)
            written = write_fit_outputs(fitted, stage.directory, with_frontier=False)
            outcome = FitOutcome.fitted(fitted, written)
        except FitError as e:
            outcome = FitOutcome.failed(str(e))
        write_json_atomic(stage.directory / FIT_RESULT, outcome.to_dict())
        seconds = stage.finish()
        self.log(f"  fit: {seconds:.0f} s" + ("" if outcome.ok else f" (failed: {outcome.error})"))
        return outcome, stage

    def samples_stage(
        self, mdir: Path, delta: Delta, fit: FitOutcome, after: Stage
    ) -> list[Sample]:
        """Greedy text for the report: the first ``sample_prompts`` test prompts,
        unsteered, at the chosen m and at twice it (``sample_tokens`` new tokens), all as
        rows of one batch (a row's m = 0 is the unsteered model exactly)."""
        prompts = [p.query for p in list(self.data["test"])[: self.exp.sample_prompts]]
        if not prompts:
            return []
        m = fit.chosen_m
        ms = [0.0] if m is None or m == 0.0 else [0.0, m, 2.0 * m]
        key = {
            "stage": "samples",
            "after": after.content_digest,
            "prompts": prompts,
            "ms": ms,
            "tokens": self.exp.sample_tokens,
            "positions": self.exp.positions,
        }
        stage = Stage(mdir / "samples", key)
        if stage.done():
            rows = json.loads((stage.directory / SAMPLES_FILE).read_text())
            return [Sample.from_dict(r) for r in rows]
        stage.start()
        rows_prompts = [q for _ in ms for q in prompts]
        rows_m = [x for x in ms for _ in prompts]
        texts = generate(
            self.model,
            self.tok,
            rows_prompts,
            delta=delta,
            m=rows_m,
            positions=self.exp.positions,  # type: ignore[arg-type]
            max_new_tokens=self.exp.sample_tokens,
            batch_size=len(rows_prompts),
        )
        samples = [
            Sample(query_text(q), x, t) for q, x, t in zip(rows_prompts, rows_m, texts, strict=True)
        ]
        write_json_atomic(stage.directory / SAMPLES_FILE, [x.to_dict() for x in samples])
        stage.finish()
        return samples

    def eval_stage(
        self,
        mdir: Path,
        delta: Delta,
        fit: FitOutcome,
        after: Stage,
        test_table: pd.DataFrame | None,
        split: str = "test",
    ) -> EvalResult:
        """Accuracy (P(A_p) > P(A_n)) and the measured gains on ``split``'s pairs (``test``, or
        ``transfer``: the ``[data] transfer`` pairs) at m = 0 and at the chosen m. The m = 0
        rows come from ``test_table`` when given (the test sweep), else are scored here."""
        pairs = self.data[split]
        key = {"stage": "eval", "after": after.content_digest}
        if split != "test":
            key.update(split=split, pairs=_pairs_digest(pairs))
        stage = Stage(mdir / ("eval" if split == "test" else split), key)
        if stage.done():
            return EvalResult.load(stage.directory)
        stage.start()
        m = fit.chosen_m

        def score(ms: list[float]) -> pd.DataFrame:
            return self._sweep(pairs, delta, ms, False).table

        if test_table is not None:
            base = test_table[test_table["m"] == 0.0]
            at = score([m]) if m is not None else None
        else:  # m = 0 comes with the capture: one call for both
            both = score([0.0] if m is None or m == 0.0 else [0.0, m])
            base = both[both["m"] == 0.0]
            at = None if m is None else base if m == 0.0 else both[both["m"] == m]
        result = EvalResult(
            accuracy_m0=float((base["loss_pos"] < base["loss_neg"]).mean()),
            pref_m0=float(base["pref_odds"].mean()),
            util_m0=float(base["util_odds"].mean()),
        )
        if m is not None and at is not None:
            gains = measured_gains(base, at)
            # the rows behind the means, for intervals over several runs (seeds)
            write_parquet_atomic(stage.directory / PAIR_GAINS, pair_gains(base, at))
            result = replace(
                result,
                chosen_m=m,
                accuracy=float((at["loss_pos"] < at["loss_neg"]).mean()),
                pref_gain=gains.pref_gain,
                util_drop=gains.util_drop,
                n_out_of_domain=gains.n_out_of_domain,
                pref_gain_ci=gains.pref_gain_ci,
                util_drop_ci=gains.util_drop_ci,
            )
        write_json_atomic(stage.directory / EVAL_RESULT, result.to_dict())
        stage.finish()
        return result

    # -- one method -------------------------------------------------------------------------

    def method(self, method: MethodSpec) -> MethodResult:
        mdir = self.out / "methods" / method.name
        t = time.perf_counter()
        delta, trained = self.train_stage(method, mdir)
        train, s_train, grid = self.sweep_stage(method, mdir, delta, trained, "train")
        # The test sweep stays on the coarse grid: the refined points resolve the train fit's
        # choice, and the test pairs are measured at that choice in eval_stage anyway.
        test, s_test, _ = self.sweep_stage(method, mdir, delta, trained, "test")
        fit, fitted = self.fit_stage(mdir, [(train, s_train), (test, s_test)])
        evaluation = self.eval_stage(mdir, delta, fit, fitted, test.table)
        transfer = (
            self.eval_stage(mdir, delta, fit, fitted, None, "transfer")
            if "transfer" in self.data
            else None
        )
        samples = self.samples_stage(mdir, delta, fit, fitted)
        control = control_stage(
            self.exp, self.model, self.tok, list(self.data["test"]), mdir, delta, grid,
            test.means, trained,
        )  # fmt: skip
        return MethodResult(
            name=method.name,
            kind=method.kind,
            objective=method.objective,
            preset=method.preset,
            site=delta.site,
            layer=delta.layer,
            n_parameters=delta.num_parameters(),
            hparams=delta.meta.get("hparams"),
            training=TrainingSummary.of_meta(delta.meta),
            grid=grid,
            means={"train": train.means, "test": test.means},
            fit=fit,
            evaluation=evaluation,
            directory=mdir,
            seconds=time.perf_counter() - t,
            samples=tuple(samples),
            transfer=transfer,
            control=control,
        )


def run_experiment(
    exp: Experiment,
    *,
    out: str | Path | None = None,
    model: Any = None,
    tokenizer: Any = None,
    progress: bool = True,
    log: Log = print,
) -> ExperimentResults | ConceptsResults | None:
    """Run ``exp`` (resuming whatever its output folder already holds) and write the report.

    Returns the results (``results.json`` holds their ``to_dict()``): an
    :class:`ExperimentResults` for one concept, a :class:`ConceptsResults` for several
    (:mod:`unisteer.experiment.concepts`). Under torchrun (``WORLD_SIZE`` above 1) the ranks
    share the work (:mod:`unisteer.experiment.distributed`) and only rank 0 returns the
    results; the other ranks return ``None``.
    """
    out_dir = check_output_dir(out if out is not None else exp.output)
    concepts = concepts_of(exp)  # an AxBench file's concepts are read before the model loads
    world = world_from_env()
    if world is not None:
        return _run_ranked(exp, concepts, out_dir, world, model, tokenizer, progress, log)
    # One process per output folder: a second run on it is refused, never mixed in.
    with OutputLock(out_dir):
        return _run_all(exp, concepts, out_dir, model, tokenizer, progress, log)


Data = tuple[PairSet, PairSet | None]


def _read_data(exp: Experiment, model: Any, tokenizer: Any, progress: bool) -> Data:
    """The experiment's pairs (and transfer pairs). AxBench data needs the model: its
    negatives are the base model's responses (:func:`unisteer.generation.base_responder`)."""
    strict = not exp.lenient
    if exp.data_format == "axbench":
        from unisteer.generation import base_responder

        pairs = load_pairs(
            exp.data,
            format="axbench",
            strict=strict,
            respond=base_responder(model, tokenizer, progress=progress),
            concept_ids=None if exp.concept_id is None else [exp.concept_id],
        )
    else:
        pairs = load_pairs(exp.data, format=exp.data_format, invert=exp.invert, strict=strict)
    transfer = (
        None if exp.transfer is None else load_pairs(exp.transfer, invert=exp.invert, strict=strict)
    )
    return pairs, transfer


def _load(exp: Experiment, model: Any, tokenizer: Any) -> tuple[Any, Any, float]:
    t = time.perf_counter()
    if model is None:
        model, tokenizer = load_model(exp.model)
    return model, tokenizer, time.perf_counter() - t


def _run_all(
    exp: Experiment,
    concepts: list[Concept],
    out_dir: Path,
    model: Any,
    tokenizer: Any,
    progress: bool,
    log: Log,
) -> ExperimentResults | ConceptsResults:
    """Every concept in this process, then the report."""
    if len(concepts) == 1:
        return _run_locked(
            exp.replace(concept_id=concepts[0].concept_id), out_dir, model, tokenizer, progress, log
        )
    return _run_concepts(exp, concepts, out_dir, model, tokenizer, progress, log)


def _run_concepts(
    exp: Experiment,
    concepts: list[Concept],
    out_dir: Path,
    model: Any,
    tokenizer: Any,
    progress: bool,
    log: Log,
) -> ConceptsResults:
    started = time.perf_counter()
    each = [for_concept(exp, c) for c in concepts]
    # Every file's pairs are read and checked before the model loads: a bad row costs no wait.
    read: dict[str, Data] = {}
    for c, e in zip(concepts, each, strict=True):
        if e.data_format != "axbench":
            read[c.name] = _read_data(e, None, None, progress)
    model, tokenizer, _ = _load(exp, model, tokenizer)
    runs = []
    for i, (c, e) in enumerate(zip(concepts, each, strict=True), 1):
        log(f"concept [{i}/{len(concepts)}] {c.name} ({c.source})")
        found = _run_locked(
            e, concept_dir(out_dir, c), model, tokenizer, progress, log, read.get(c.name)
        )
        runs.append(ConceptRun(c.name, c.source, c.concept_id, concept_dir(out_dir, c), found))
    table = concept_table(runs)
    results = ConceptsResults(exp.name, exp.source, exp.model, runs, table, method_table(table))
    results.wall_seconds = time.perf_counter() - started
    results.peak_memory_mb = peak_memory_mb()
    write_concepts_report(results, out_dir)
    return results


def _run_ranked(
    exp: Experiment,
    concepts: list[Concept],
    out_dir: Path,
    world: World,
    model: Any,
    tokenizer: Any,
    progress: bool,
    log: Log,
) -> ExperimentResults | ConceptsResults | None:
    """This rank's share of the concepts × methods, a barrier, and on rank 0 the report
    (every stage read back from the shared folder)."""
    job = distributed.join(world)
    lock = OutputLock(out_dir)
    locked = False
    try:
        problem = ""
        if world.is_main:  # rank 0 holds the folder for the whole job
            try:
                lock.__enter__()
                locked = True
            except UsageError as e:
                problem = str(e)
        job.agree(not problem, problem)

        def say(line: str) -> None:
            log(f"rank {world.rank}/{world.size}: {line}")

        model, tokenizer, _ = _load(exp, model, tokenizer)
        n_blocks = len(find_blocks(model)[1])
        single = len(concepts) == 1
        each = [
            exp.replace(concept_id=c.concept_id) if single else for_concept(exp, c)
            for c in concepts
        ]
        units = [
            (i, method)
            for i, e in enumerate(each)
            for method in resolve_layers(e, n_blocks).methods
        ]
        mine = distributed.partition(units, world.rank, world.size)
        say(f"{len(mine)} of {len(units)} concept × method units")
        for i in sorted({i for i, _ in mine}):
            c = concepts[i]
            folder = out_dir if single else concept_dir(out_dir, c)
            shown = progress and world.is_main
            torch.manual_seed(exp.seed)
            np.random.seed(exp.seed)
            data = _read_data(each[i], model, tokenizer, shown)
            _, runner = _prepare(each[i], folder, model, tokenizer, shown, say, data)
            for method in (m for j, m in mine if j == i):
                say(f"{c.name}: {method.name}")
                runner.method(method)
        job.barrier("written")  # every unit's stages are on disk
        if not world.is_main:
            return None
        return _run_all(exp, concepts, out_dir, model, tokenizer, progress, log)
    finally:
        if locked:
            lock.__exit__(None, None, None)


def _prepare(
    exp: Experiment,
    out_dir: Path,
    model: Any,
    tokenizer: Any,
    progress: bool,
    log: Log,
    data: Data,
) -> tuple[Experiment, _Runner]:
    """The experiment with its layers resolved, and its runner on ``data``."""
    pairs, transfer = data
    exp = resolve_layers(exp, len(find_blocks(model)[1]))
    return exp, _Runner(exp, out_dir, pairs, model, tokenizer, progress, log, transfer)


def _run_locked(
    exp: Experiment,
    out_dir: Path,
    model: Any,
    tokenizer: Any,
    progress: bool,
    log: Log,
    data: Data | None = None,
) -> ExperimentResults:
    from unisteer.report.html import write_report

    started = time.perf_counter()
    torch.manual_seed(exp.seed)
    np.random.seed(exp.seed)
    # The data is read and checked before the model loads: a bad row costs no waiting.
    if data is None and exp.data_format != "axbench":
        data = _read_data(exp, None, None, progress)
    model, tokenizer, load_seconds = _load(exp, model, tokenizer)
    if data is None:
        data = _read_data(exp, model, tokenizer, progress)
    exp, runner = _prepare(exp, out_dir, model, tokenizer, progress, log, data)
    blocks = sorted({runner.layer_of(m) for m in exp.methods})
    where = f"layer {blocks[0]}" if len(blocks) == 1 else f"blocks {', '.join(map(str, blocks))}"
    log(
        f"experiment {exp.name!r}: {exp.model} {where}, "
        f"{len(runner.data['train'])} training pairs, sweeps on "
        f"{len(runner.data['sweep_train'])} train + {len(runner.data['test'])} test pairs, "
        f"{len(exp.methods)} methods -> {out_dir}"
    )
    methods = []
    for i, method in enumerate(exp.methods, 1):
        log(f"[{i}/{len(exp.methods)}] {method.name}")
        methods.append(runner.method(method))
    results = ExperimentResults(
        experiment=ExperimentSettings(
            name=exp.name,
            source=exp.source,
            model=exp.model,
            layer=runner.layer,
            data=exp.data,
            seed=exp.seed,
            train=exp.train,
            sweep_points=exp.sweep_points,
            reduction=exp.reduction,
            positions=exp.positions,
            max_util_drop=exp.max_util_drop,
            fit_starts=exp.fit_starts,
            transfer=exp.transfer,
            budget_level=exp.budget_level,
        ),
        data=DataCounts(
            source=exp.data,
            n_train=len(runner.data["train"]),
            n_sweep_train=len(runner.data["sweep_train"]),
            n_test=len(runner.data["test"]),
            skipped=runner.skipped,
        ),
        model=ModelInfo(name=exp.model, fingerprint=runner.fingerprint),
        versions=_versions(),
        methods=methods,
        model_load_seconds=load_seconds,
    )
    results.wall_seconds = time.perf_counter() - started
    results.peak_memory_mb = peak_memory_mb()
    write_report(results, out_dir)
    results.wall_seconds = time.perf_counter() - started
    results.peak_memory_mb = peak_memory_mb()
    write_json_atomic(out_dir / "results.json", results.to_dict())
    return results
