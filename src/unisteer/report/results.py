"""The results of an experiment, typed: what the runner builds, the report reads and
``results.json`` holds.

* :class:`SweepTables` — one sweep's tidy table and its per-m means (``sweep.parquet``,
  ``means.parquet``);
* :class:`FitOutcome` — the fit stage: the in-memory :class:`~unisteer.fit.SweepFit` objects
  of train and test, the :class:`~unisteer.fit.MultiplierChoice` (chosen on the train fit),
  R² three ways (:class:`~unisteer.fit.Generalization`, paper Tables 2, 6, 7) and what
  ``fits.json`` holds; or the error when the fit failed;
* :class:`EvalResult` — accuracy and measured gains on the test pairs at m = 0 and at the
  chosen m;
* :class:`MethodResult` — one steering method: training, sweeps, fit, evaluation;
* :class:`ExperimentResults` — the settings, data counts, model, versions, timings, peak
  memory and every method.

Each has ``to_dict()``, the JSON that ``results.json`` holds (non-finite numbers as ``null``),
and a way back from disk (``from_dict`` / ``load``) for a rerun that skips a finished stage or
a report drawn from a finished run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from unisteer.files import json_safe
from unisteer.fit import CurveFit, Generalization, MultiplierChoice, R2Scores, SweepFit
from unisteer.report.fit_outputs import FittedSweeps
from unisteer.scoring.table import SweepResult, read_sweep_table

FIT_RESULT = "result.json"
EVAL_RESULT = "eval.json"
PAIR_GAINS = "pair_gains.parquet"  # per test pair at the chosen m (unisteer.evaluate.gains)
CURVES = ("preference", "utility")


def _float(value: Any) -> float:
    """A JSON number back to a float (``null``, a non-finite number, becomes NaN)."""
    return float("nan") if value is None else float(value)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict(orient="records")]


# -- one sweep ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SweepTables:
    """One sweep's tidy table (one row per pair and m) and its per-m means."""

    table: pd.DataFrame
    means: pd.DataFrame

    @classmethod
    def of(cls, result: SweepResult) -> SweepTables:
        """The tables of a sweep just run (nothing read from disk)."""
        return cls(result.table, result.means())

    @classmethod
    def load(cls, directory: str | Path) -> SweepTables:
        """The tables a finished sweep stage wrote (``sweep.parquet``, ``means.parquet``)."""
        d = Path(directory)
        return cls(read_sweep_table(d / "sweep.parquet"), pd.read_parquet(d / "means.parquet"))


# -- the fit stage ------------------------------------------------------------------------------


def _sweep_fit(summary: Mapping[str, Any]) -> SweepFit:
    fits = summary["fits"]
    return SweepFit(CurveFit.from_dict(fits["preference"]), CurveFit.from_dict(fits["utility"]))


def _choice(data: Mapping[str, Any]) -> MultiplierChoice:
    return MultiplierChoice(
        m=_float(data["m"]),
        pref=_float(data["pref"]),
        util=_float(data["util"]),
        pref_gain=_float(data["pref_gain"]),
        util_drop=_float(data["util_drop"]),
        pref_at_zero=_float(data["pref_at_zero"]),
        util_at_zero=_float(data["util_at_zero"]),
        max_util_drop=_float(data["max_util_drop"]),
        constraint_active=bool(data["constraint_active"]),
        at_range_edge=bool(data["at_range_edge"]),
        budget_level=_float(data.get("budget_level", 0.5)),
        util_drop_bound=_float(data.get("util_drop_bound", data["util_drop"])),
    )


def _scores(data: Mapping[str, Any]) -> R2Scores:
    return R2Scores(
        _float(data.get("train")), _float(data.get("test")), _float(data.get("train_to_test"))
    )


@dataclass(frozen=True, eq=False)
class FitOutcome:
    """The fit stage of one method: the fits (``error`` is ``None``) or why there are none.

    ``train`` and ``test`` are the fits of the two sweeps, ``choice`` the multiplier chosen on
    the train fit, ``generalization`` R² three ways (when there is a test fit), ``record``
    what ``fits.json`` holds (``results.json`` repeats it under ``fit.fits``).
    """

    train: SweepFit | None = None
    test: SweepFit | None = None
    choice: MultiplierChoice | None = None
    generalization: Generalization | None = None
    record: dict[str, Any] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def fitted(cls, fits: FittedSweeps, record: Mapping[str, Any]) -> FitOutcome:
        """The outcome of fits made in this process; ``record`` is the ``fits.json`` written
        from them (:func:`unisteer.report.fit_outputs.write_fit_outputs`)."""
        return cls(fits.train, fits.test, fits.choice, fits.generalization, dict(record))

    @classmethod
    def failed(cls, error: str) -> FitOutcome:
        return cls(error=error)

    @property
    def chosen_m(self) -> float | None:
        """The multiplier chosen on the train fit (``None``: no fit, or no finite choice)."""
        if not self.ok or self.choice is None or not math.isfinite(self.choice.m):
            return None
        return self.choice.m

    def r2(self) -> dict[str, dict[str, float | None]]:
        """R² per curve (``preference``, ``utility``) and split (``train``, and with a test
        fit ``test`` and ``train_to_test``); NaN as ``None``. Empty when the fit failed."""
        if self.generalization is not None:
            return {k: v for k, v in self.generalization.to_dict().items()}
        if self.train is None:
            return {}
        return {
            "preference": {"train": _finite(self.train.preference.r2)},
            "utility": {"train": _finite(self.train.utility.r2)},
        }

    def to_dict(self) -> dict[str, Any]:
        """The fit stage's ``result.json`` (and ``results.json``'s ``fit`` of a method)."""
        if not self.ok:
            return {"ok": False, "error": self.error}
        return {"ok": True, "fits": json_safe(self.record or {})}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FitOutcome:
        """Back from :meth:`to_dict` output (a finished stage's ``result.json``): the fits are
        rebuilt from the parameters and points ``fits.json`` records."""
        if not data.get("ok"):
            return cls.failed(str(data.get("error")))
        record = dict(data["fits"])
        train = _sweep_fit(record["train"])
        test = _sweep_fit(record["test"]) if "test" in record else None
        general = None
        if test is not None:
            r2 = record["r2"]
            general = Generalization(train, test, _scores(r2["preference"]), _scores(r2["utility"]))
        return cls(train, test, _choice(record["choice"]), general, record)

    @classmethod
    def load(cls, directory: str | Path) -> FitOutcome:
        """The outcome a finished fit stage wrote into ``directory``."""
        return cls.from_dict(json.loads((Path(directory) / FIT_RESULT).read_text()))


# -- the eval stage -----------------------------------------------------------------------------


def _interval(value: Any) -> tuple[float, float] | None:
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    return _float(value[0]), _float(value[1])


@dataclass(frozen=True)
class EvalResult:
    """Measured on the test pairs: accuracy (the fraction with P(A_p) > P(A_n)) and mean
    PrefOdds / UtilOdds at m = 0; with a chosen m also accuracy there, the PrefOdds gain and
    the UtilOdds drop (in-domain pairs; ``None`` when none is) from m = 0, and the number of
    pairs out of UtilOdds' domain."""

    accuracy_m0: float
    pref_m0: float
    util_m0: float
    chosen_m: float | None = None
    accuracy: float | None = None
    pref_gain: float | None = None
    util_drop: float | None = None
    n_out_of_domain: int | None = None
    pref_gain_ci: tuple[float, float] | None = None  # 95% bootstrap over test pairs
    util_drop_ci: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "accuracy_m0": self.accuracy_m0,
            "pref_m0": self.pref_m0,
            "util_m0": self.util_m0,
        }
        if self.chosen_m is not None:
            out.update(
                chosen_m=self.chosen_m,
                accuracy=self.accuracy,
                pref_gain=self.pref_gain,
                util_drop=self.util_drop,
                n_out_of_domain=self.n_out_of_domain,
                pref_gain_ci=None if self.pref_gain_ci is None else list(self.pref_gain_ci),
                util_drop_ci=None if self.util_drop_ci is None else list(self.util_drop_ci),
            )
        return dict(json_safe(out))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalResult:
        def opt(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(value)

        n_out = data.get("n_out_of_domain")
        return cls(
            accuracy_m0=_float(data["accuracy_m0"]),
            pref_m0=_float(data["pref_m0"]),
            util_m0=_float(data["util_m0"]),
            chosen_m=opt("chosen_m"),
            accuracy=opt("accuracy"),
            pref_gain=opt("pref_gain"),
            util_drop=opt("util_drop"),
            n_out_of_domain=None if n_out is None else int(n_out),
            pref_gain_ci=_interval(data.get("pref_gain_ci")),
            util_drop_ci=_interval(data.get("util_drop_ci")),
        )

    @classmethod
    def load(cls, directory: str | Path) -> EvalResult:
        """The numbers a finished eval stage wrote into ``directory``."""
        return cls.from_dict(json.loads((Path(directory) / EVAL_RESULT).read_text()))


# -- one method ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSummary:
    """How a delta was trained: steps, the first and final training loss, the validation
    record and the loss unit, as the delta's metadata holds them."""

    steps: int | None = None
    first_loss: float | None = None
    final_loss: float | None = None
    validation: Any = None
    unit: Any = None

    @classmethod
    def of_meta(cls, meta: Mapping[str, Any]) -> TrainingSummary:
        """From a delta's ``meta`` (``steps``, ``history``, ``validation``, ``unit``)."""
        history = meta.get("history") or []
        return cls(
            steps=meta.get("steps"),
            first_loss=history[0]["loss"] if history else None,
            final_loss=history[-1]["loss"] if history else None,
            validation=meta.get("validation"),
            unit=meta.get("unit"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "first_loss": self.first_loss,
            "final_loss": self.final_loss,
            "validation": self.validation,
            "unit": self.unit,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingSummary:
        return cls(
            data.get("steps"),
            data.get("first_loss"),
            data.get("final_loss"),
            data.get("validation"),
            data.get("unit"),
        )


@dataclass(frozen=True)
class Sample:
    """One greedy generation for the report: a test prompt, the multiplier, the text."""

    prompt: str
    m: float
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "m": self.m, "text": self.text}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sample:
        return cls(str(data["prompt"]), _float(data["m"]), str(data["text"]))


def _budget(kappa: float) -> float | str:
    """A KL budget for JSON: ``inf`` (no budget: fixed m_max) as the string ``"inf"``."""
    return "inf" if kappa == math.inf else kappa


@dataclass(frozen=True)
class ControlTrace:
    """One greedy generation under a controller, token by token: the pieces of text, the
    multiplier each was drawn with and its next-token KL to the unsteered model."""

    prompt: str
    kappa: float
    text: str
    tokens: tuple[str, ...]
    m: tuple[float, ...]
    kl: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "kappa": _budget(self.kappa), "text": self.text,
                "tokens": list(self.tokens), "m": list(self.m), "kl": list(self.kl)}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ControlTrace:
        return cls(
            str(data["prompt"]), float(data["kappa"]), str(data["text"]),
            tuple(str(x) for x in data["tokens"]), tuple(_float(x) for x in data["m"]),
            tuple(_float(x) for x in data["kl"]),
        )  # fmt: skip


@dataclass(frozen=True)
class ControlResult:
    """A controller swept over its KL budgets on the test pairs (``[control]``): per kappa the
    mean ``m_t``, PrefOdds gain and UtilOdds drop against m = 0 (``means``: ``kappa, mean_m,
    pref_gain, util_drop, pref_odds, util_odds, n``), and one generation's trace."""

    controller: dict[str, Any]
    means: pd.DataFrame
    trace: ControlTrace | None

    def to_dict(self) -> dict[str, Any]:
        means = self.means.assign(kappa=[_budget(float(x)) for x in self.means["kappa"]])
        return {
            "controller": dict(self.controller),
            "means": _records(means),
            "trace": self.trace.to_dict() if self.trace is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ControlResult:
        trace = data.get("trace")
        means = pd.DataFrame.from_records(data["means"])
        means["kappa"] = [float(x) for x in means["kappa"]]  # "inf" back to a float
        return cls(
            dict(data["controller"]),
            means,
            ControlTrace.from_dict(trace) if trace else None,
        )


@dataclass(eq=False)
class MethodResult:
    """One steering method of an experiment: its delta, sweeps, fit and evaluation.

    ``means`` maps ``train`` and ``test`` to the per-m means of that split's sweep;
    ``directory`` is the method's output folder, ``seconds`` its time in this run."""

    name: str
    kind: str
    objective: str
    preset: str | None
    site: str
    layer: int | None
    n_parameters: int
    hparams: dict[str, Any] | None
    training: TrainingSummary
    grid: list[float]
    means: dict[str, pd.DataFrame]
    fit: FitOutcome
    evaluation: EvalResult
    directory: Path
    seconds: float
    samples: tuple[Sample, ...] = ()  # unsteered, at the chosen m and at twice it
    transfer: EvalResult | None = None  # the same m on the [data] transfer pairs
    control: ControlResult | None = None  # the [control] controller over its kappas

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "kind": self.kind,
            "objective": self.objective,
            "preset": self.preset,
            "site": self.site,
            "layer": self.layer,
            "n_parameters": self.n_parameters,
            "hparams": self.hparams,
            "training": self.training.to_dict(),
            "grid": list(self.grid),
            "means": {split: _records(frame) for split, frame in self.means.items()},
            "fit": self.fit.to_dict(),
            "eval": self.evaluation.to_dict(),
            "samples": [x.to_dict() for x in self.samples],
            "dir": str(self.directory),
            "seconds": self.seconds,
        }
        if self.transfer is not None:
            out["transfer"] = self.transfer.to_dict()
        if self.control is not None:
            out["control"] = self.control.to_dict()
        return dict(json_safe(out))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MethodResult:
        return cls(
            name=str(data["name"]),
            kind=str(data["kind"]),
            objective=str(data["objective"]),
            preset=data.get("preset"),
            site=str(data["site"]),
            layer=None if data.get("layer") is None else int(data["layer"]),
            n_parameters=int(data["n_parameters"]),
            hparams=data.get("hparams"),
            training=TrainingSummary.from_dict(data.get("training") or {}),
            grid=[float(m) for m in data["grid"]],
            means={split: pd.DataFrame.from_records(rows) for split, rows in data["means"].items()},
            fit=FitOutcome.from_dict(data["fit"]),
            evaluation=EvalResult.from_dict(data["eval"]),
            directory=Path(data["dir"]),
            seconds=float(data["seconds"]),
            samples=tuple(Sample.from_dict(x) for x in data.get("samples") or ()),
            transfer=EvalResult.from_dict(data["transfer"]) if data.get("transfer") else None,
            control=ControlResult.from_dict(data["control"]) if data.get("control") else None,
        )


# -- the experiment -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExperimentSettings:
    """The settings of an experiment that its results depend on (see
    :mod:`unisteer.experiment.config`); ``layer`` is the one used."""

    name: str
    source: str
    model: str
    layer: int
    data: str
    seed: int
    train: dict[str, Any]
    sweep_points: int
    reduction: str
    positions: str
    max_util_drop: float
    fit_starts: int
    transfer: str | None = None  # the source of the transfer pairs ([data] transfer)
    budget_level: float = 0.5  # one-sided confidence of the budget ([fit] budget_level)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "source": self.source,
            "model": self.model,
            "layer": self.layer,
            "data": self.data,
            "seed": self.seed,
            "train": dict(self.train),
            "sweep_points": self.sweep_points,
            "reduction": self.reduction,
            "positions": self.positions,
            "max_util_drop": self.max_util_drop,
            "fit_starts": self.fit_starts,
            "budget_level": self.budget_level,
        }
        if self.transfer is not None:
            out["transfer"] = self.transfer
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentSettings:
        return cls(
            name=str(data["name"]),
            source=str(data["source"]),
            model=str(data["model"]),
            layer=int(data["layer"]),
            data=str(data["data"]),
            seed=int(data["seed"]),
            train=dict(data["train"]),
            sweep_points=int(data["sweep_points"]),
            reduction=str(data["reduction"]),
            positions=str(data["positions"]),
            max_util_drop=float(data["max_util_drop"]),
            fit_starts=int(data["fit_starts"]),
            transfer=data.get("transfer"),
            budget_level=float(data.get("budget_level", 0.5)),
        )


@dataclass(frozen=True)
class DataCounts:
    """Where the pairs came from, how many each stage used, and the rows left out (lenient
    reading: unusable rows and pairs longer than the token limit, one line each)."""

    source: str
    n_train: int
    n_sweep_train: int
    n_test: int
    skipped: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "n_train": self.n_train,
            "n_sweep_train": self.n_sweep_train,
            "n_test": self.n_test,
            "skipped": list(self.skipped),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataCounts:
        return cls(
            str(data["source"]),
            int(data["n_train"]),
            int(data["n_sweep_train"]),
            int(data["n_test"]),
            tuple(str(x) for x in data.get("skipped", ())),
        )


@dataclass(frozen=True)
class ModelInfo:
    """The model's name and fingerprint (:func:`unisteer.core.fingerprint.model_fingerprint`)."""

    name: str
    fingerprint: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "fingerprint": dict(self.fingerprint)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelInfo:
        return cls(str(data["name"]), dict(data["fingerprint"]))


@dataclass(eq=False)
class ExperimentResults:
    """Everything an experiment run produced; ``to_dict()`` is ``results.json``.

    ``wall_seconds`` and ``peak_memory_mb`` are filled in by the runner as the run ends
    (:func:`unisteer.experiment.run_experiment`)."""

    experiment: ExperimentSettings
    data: DataCounts
    model: ModelInfo
    versions: dict[str, str]
    methods: list[MethodResult] = field(default_factory=list)
    model_load_seconds: float = 0.0
    wall_seconds: float = 0.0
    peak_memory_mb: float = 0.0

    def method(self, name: str) -> MethodResult:
        """The method called ``name``."""
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(name)

    def timings(self) -> dict[str, Any]:
        return {
            "model_load_seconds": self.model_load_seconds,
            "methods_seconds": {m.name: m.seconds for m in self.methods},
            "wall_seconds": self.wall_seconds,
        }

    def to_dict(self) -> dict[str, Any]:
        """What ``results.json`` holds (plain JSON values)."""
        out = {
            "experiment": self.experiment.to_dict(),
            "data": self.data.to_dict(),
            "model": self.model.to_dict(),
            "versions": dict(self.versions),
            "methods": [m.to_dict() for m in self.methods],
            "timings": self.timings(),
            "peak_memory_mb": self.peak_memory_mb,
        }
        return dict(json_safe(out))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentResults:
        timings = data.get("timings") or {}
        return cls(
            experiment=ExperimentSettings.from_dict(data["experiment"]),
            data=DataCounts.from_dict(data["data"]),
            model=ModelInfo.from_dict(data["model"]),
            versions={str(k): str(v) for k, v in data["versions"].items()},
            methods=[MethodResult.from_dict(m) for m in data["methods"]],
            model_load_seconds=_float(timings.get("model_load_seconds", 0.0)),
            wall_seconds=_float(timings.get("wall_seconds", 0.0)),
            peak_memory_mb=_float(data.get("peak_memory_mb", 0.0)),
        )

    @classmethod
    def load(cls, path: str | Path) -> ExperimentResults:
        """A finished run's ``results.json`` (or the folder holding it)."""
        p = Path(path)
        if p.is_dir():
            p = p / "results.json"
        return cls.from_dict(json.loads(p.read_text(encoding="utf-8")))


__all__ = [
    "DataCounts",
    "EvalResult",
    "ExperimentResults",
    "ExperimentSettings",
    "FitOutcome",
    "MethodResult",
    "ModelInfo",
    "SweepTables",
    "TrainingSummary",
]
