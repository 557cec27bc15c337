"""Experiment files: a TOML description of one run, validated strictly.

An experiment names a model and layer, the data (and how many pairs of each split to use),
the methods (kind × objective, each with optional preset and hyper-parameters), the sweep and
the fits. Every key is checked: an unknown key, a wrong type or a missing data file is an
error that names the file, the key and its line. See ``src/unisteer/experiment/builtin/*.toml``.

    name = "default"
    output = "unisteer-out/default"

    [model]
    name = "smollm2-135m-instruct"
    layer = 15                     # optional: the middle block

    [data]
    source = "default:optimism"    # anything `unisteer data inspect` reads, or a list of them
                                   # (one concept each; unisteer.experiment.concepts)
    concepts = "all"               # with format = "axbench": every concept, or a list of ids
    train_pairs = 32               # pairs of the train split to train on (omit: all)
    test_pairs = 16                # test pairs to sweep (omit: all)
    sweep_train_pairs = 8          # of the training pairs, how many to sweep (omit: all)
    max_tokens = 1024              # optional: a bound below the model's context window
    lenient = false                # true: skip unusable rows and longer pairs, and list them
    transfer = "default:pirate_multiturn"  # optional: other pairs, measured at each chosen m
    transfer_pairs = 32            # how many of them (omit: all)

    [train]                        # defaults for every method (TrainConfig fields)
    epochs = 2

    [sweep]
    points = 21

    [fit]
    max_util_drop = 1.0
    budget_level = 0.9             # optional: keep the budget with this one-sided confidence

    [control]                      # optional: an adaptive multiplier, per method (issue 19)
    controller = "kl_budget"       # or "static_kl"
    kappas = [0.05, 0.5, 2.0]      # KL budgets (nats per token) swept on the test pairs
    m_max = 8.0                    # optional: the largest m (default: the method's grid end)
    k = 8                          # kl_budget's candidate multipliers
    sample_kappa = 0.5             # optional: the kappa of the report's m_t trace

    [[method]]
    kind = "vector"
    objective = "split"
    [method.train]                 # this method's own hyper-parameters
    lr = 0.02
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unisteer.core.delta import KINDS
from unisteer.errors import UnisteerError
from unisteer.training.config import TrainConfig, make_config

if TYPE_CHECKING:
    from unisteer.control.spec import ControlSpec


class ExperimentError(UnisteerError):
    """An experiment file is invalid; the message names the file, the key and the line."""


@dataclass(frozen=True)
class MethodSpec:
    """One steering method of an experiment: a kind trained with an objective."""

    kind: str
    objective: str
    name: str
    preset: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    grid: str | None = None  # an explicit sweep grid ("lo:hi:n" or a list); default: the delta's
    layer: int | None = None  # this method's block; default: the experiment's ([model] layer)
    layers: str | None = None  # a rule ("all", "every:K") expanded once the model is known


@dataclass(frozen=True)
class Experiment:
    """A validated experiment (see the module docstring for the file format)."""

    name: str
    output: str
    methods: tuple[MethodSpec, ...]
    seed: int = 0
    model: str = "smollm2-135m-instruct"
    layer: int | None = None
    data: str = "default:optimism"
    # several concepts (unisteer.experiment.concepts): every source, or every (chosen) concept
    # of an AxBench file; empty: the one source ``data``
    sources: tuple[str, ...] = ()
    concept_ids: tuple[int, ...] | None = None  # [data] concepts of an AxBench file (None: all)
    concept_id: int | None = None  # the one AxBench concept of a per-concept experiment
    data_format: str = "auto"
    invert: bool | None = None
    train_pairs: int | None = None
    test_pairs: int | None = None
    sweep_train_pairs: int | None = None
    test_fraction: float = 0.2
    transfer: str | None = None  # pairs of another source, measured at each chosen m
    transfer_pairs: int | None = None
    max_tokens: int | None = None
    lenient: bool = False
    train: dict[str, Any] = field(default_factory=dict)
    sweep_points: int = 21
    reduction: str = "sum"
    include_suffix: bool = False
    positions: str = "all"
    adaptive: bool = False  # refine the train sweep where the choice of m is decided
    refine_rounds: int = 3
    fit_starts: int = 16
    max_util_drop: float = 1.0
    # one-sided confidence of the budget over pairs (unisteer.fit.margin; 0.5: the fit itself)
    budget_level: float = 0.5
    sample_prompts: int = 3  # test prompts generated for the report, per method ([report])
    sample_tokens: int = 48  # new tokens per sample, greedy ([report] tokens)
    control: ControlSpec | None = None  # [control]: a controller swept over kappas per method
    kappas: tuple[float, ...] = ()
    sample_kappa: float | None = None  # the kappa of the report's m_t trace (default: middle)
    source: str = "<built-in>"

    def method_config(self, method: MethodSpec) -> TrainConfig:
        """The training configuration of ``method``: the experiment's defaults, then the
        preset, then the method's own values."""
        values = {**self.train, **method.train}
        values.setdefault("seed", self.seed)
        return make_config(method.preset, **values)

    def replace(self, **changes: Any) -> Experiment:
        return dataclasses.replace(self, **changes)


# -- layers -------------------------------------------------------------------------------------

LAYER_RULE = re.compile(r"all|every:[1-9][0-9]*")


def at_layer(method: MethodSpec, layer: int) -> MethodSpec:
    """``method`` at block ``layer``, named after it (``vector-diffmean-L4``)."""
    return dataclasses.replace(method, layer=layer, layers=None, name=f"{method.name}-L{layer}")


def rule_layers(rule: str, n_blocks: int) -> list[int]:
    """The blocks a ``layers`` rule names in a model of ``n_blocks``: ``all`` is every block,
    ``every:K`` every K-th from block 0 (0, K, 2K, ...)."""
    if not LAYER_RULE.fullmatch(rule):
        raise ValueError(f"expected 'all' or 'every:K', got {rule!r}")
    step = 1 if rule == "all" else int(rule.split(":")[1])
    return list(range(0, n_blocks, step))


def resolve_layers(exp: Experiment, n_blocks: int) -> Experiment:
    """``exp`` with every ``layers`` rule expanded for a model of ``n_blocks`` blocks, checked:
    a block the model does not have is an error naming the method."""
    methods: list[MethodSpec] = []
    for method in exp.methods:
        if method.layers is not None:
            methods += [at_layer(method, x) for x in rule_layers(method.layers, n_blocks)]
        else:
            methods.append(method)
    for method in methods:
        layer = method.layer if method.layer is not None else exp.layer
        if layer is not None and layer >= n_blocks:
            where = "[model] layer" if method.layer is None else f"method {method.name!r}"
            raise ExperimentError(
                f"{exp.source}: {where}: block {layer} does not exist; "
                f"the model has {n_blocks} blocks (0..{n_blocks - 1})"
            )
    names = [m.name for m in methods]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ExperimentError(f"{exp.source}: two methods are named {twice[0]!r}; give one a name")
    return exp.replace(methods=tuple(methods))


# -- reading ------------------------------------------------------------------------------------

_TOP = {
    "name", "output", "seed", "model", "data", "train", "sweep", "fit", "report", "control",
    "method",
}  # fmt: skip
_MODEL: dict[str, type] = {"name": str, "layer": int}
_DATA: dict[str, type] = {
    "source": object,  # a string or a list of them (checked in parse_experiment)
    "concepts": object,  # "all" or a list of AxBench concept ids
    "format": str,
    "invert": bool,
    "train_pairs": int,
    "test_pairs": int,
    "sweep_train_pairs": int,
    "test_fraction": float,
    "transfer": str,
    "transfer_pairs": int,
    "max_tokens": int,
    "lenient": bool,
}
_SWEEP: dict[str, type] = {
    "points": int,
    "reduction": str,
    "include_suffix": bool,
    "positions": str,
    "adaptive": bool,
    "refine_rounds": int,
}
_FIT: dict[str, type] = {"starts": int, "max_util_drop": float, "budget_level": float}
_REPORT: dict[str, type] = {"samples": int, "tokens": int}
_CONTROL: dict[str, type] = {
    "controller": str,
    "kappas": list,
    "m_max": float,
    "k": int,
    "q": float,
    "points": int,
    "sample_kappa": float,
}
_METHOD: dict[str, type] = {
    "kind": str,
    "objective": str,
    "name": str,
    "preset": str,
    "train": dict,
    "grid": str,
    "layers": object,  # a list of block indices, "all" or "every:K" (checked below)
}
_TRAIN_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


class _Where:
    """Finds the line of a key in the TOML text, for error messages."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.lines = text.splitlines()

    def line(self, table: str, key: str | None = None, index: int | None = None) -> int | None:
        current, seen = "", -1
        for no, raw in enumerate(self.lines, 1):
            s = raw.strip()
            header = re.match(r"^\[\[?\s*([^\]]+?)\s*\]\]?", s)
            if header:
                current = header.group(1)
                if current == table.split(".")[0] and s.startswith("[["):
                    seen += 1
                if key is None and current == table and (index is None or seen == index):
                    return no
                continue
            same = current == table and (index is None or seen == index)
            if key is not None and same and re.match(rf"^{re.escape(key)}\s*=", s):
                return no
        return None

    def error(
        self, message: str, table: str = "", key: str | None = None, index: int | None = None
    ) -> ExperimentError:
        no = self.line(table, key, index)
        dotted = ".".join(x for x in (table, key) if x)
        if index is not None:
            dotted = dotted.replace("method", f"method[{index}]", 1)
        where = f"{self.source}:{no}" if no else self.source
        return ExperimentError(f"{where}: {dotted or 'file'}: {message}")


def _check_table(
    where: _Where,
    values: dict[str, Any],
    schema: dict[str, type],
    table: str,
    index: int | None = None,
) -> None:
    for key, value in values.items():
        if key not in schema:
            raise where.error(
                f"unknown key; expected one of {', '.join(sorted(schema))}", table, key, index
            )
        want = schema[key]
        ok = (
            isinstance(value, int | float) and not isinstance(value, bool)
            if want is float
            else isinstance(value, want) and not (want is int and isinstance(value, bool))
        )
        if not ok:
            raise where.error(
                f"expected {want.__name__}, got {type(value).__name__} {value!r}",
                table,
                key,
                index,
            )


def _check_train(where: _Where, values: dict[str, Any], table: str, index: int | None) -> None:
    for key, value in values.items():
        if key not in _TRAIN_FIELDS:
            raise where.error(
                f"unknown training option; expected one of {', '.join(sorted(_TRAIN_FIELDS))}",
                table,
                key,
                index,
            )
        try:
            make_config(**{key: value})
        except (ValueError, TypeError) as e:
            raise where.error(str(e), table, key, index) from None


def parse_experiment(text: str, source: str = "<string>") -> Experiment:
    """Validate the TOML ``text`` (from ``source``, for messages) into an :class:`Experiment`."""
    where = _Where(source, text)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ExperimentError(f"{source}: not valid TOML: {e}") from None
    for key in raw:
        if key not in _TOP:
            raise where.error(f"unknown key; expected one of {', '.join(sorted(_TOP))}", "", key)
    for key, want in (("name", str), ("output", str), ("seed", int)):
        if key in raw and (not isinstance(raw[key], want) or isinstance(raw[key], bool)):
            raise where.error(f"expected {want.__name__}, got {raw[key]!r}", "", key)
    for table in ("model", "data", "train", "sweep", "fit", "report", "control"):
        if table in raw and not isinstance(raw[table], dict):
            raise where.error("expected a table", "", table)
    model = raw.get("model", {})
    data = raw.get("data", {})
    sweep = raw.get("sweep", {})
    fit = raw.get("fit", {})
    report = raw.get("report", {})
    _check_table(where, report, _REPORT, "report")
    if report.get("samples", 3) < 0:
        raise where.error(f"must be at least 0, got {report['samples']}", "report", "samples")
    if report.get("tokens", 48) < 1:
        raise where.error(f"must be at least 1, got {report['tokens']}", "report", "tokens")
    _check_table(where, model, _MODEL, "model")
    _check_table(where, data, _DATA, "data")
    _check_table(where, sweep, _SWEEP, "sweep")
    _check_table(where, fit, _FIT, "fit")
    _check_train(where, raw.get("train", {}), "train", None)
    control, kappas, sample_kappa = _control(where, raw.get("control"))
    if "layer" in model and model["layer"] < 0:
        raise where.error(
            f"must be 0 or more, got {model['layer']} (layers are not counted from the end)",
            "model",
            "layer",
        )
    if "format" in data:
        from unisteer.data.sources import FORMATS

        if data["format"] not in FORMATS:
            raise where.error(f"expected one of {', '.join(FORMATS)}", "data", "format")
    if "output" in raw:
        from unisteer.errors import UsageError
        from unisteer.files import check_output_dir

        try:
            check_output_dir(raw["output"])
        except UsageError as e:
            raise where.error(str(e), "", "output") from None
    for key in ("train_pairs", "test_pairs", "sweep_train_pairs", "transfer_pairs", "max_tokens"):
        if key in data and data[key] < 1:
            raise where.error(f"must be at least 1, got {data[key]}", "data", key)
    if "test_fraction" in data and not 0 < data["test_fraction"] < 1:
        raise where.error("must be in (0, 1)", "data", "test_fraction")
    if sweep.get("points", 21) < 7:
        raise where.error("the fits need at least 7 points", "sweep", "points")
    from unisteer.scoring.grid import MAX_POINTS

    if sweep.get("points", 21) > MAX_POINTS:
        raise where.error(f"at most {MAX_POINTS} points", "sweep", "points")
    if sweep.get("reduction", "sum") not in ("sum", "mean"):
        raise where.error("expected 'sum' or 'mean'", "sweep", "reduction")
    if sweep.get("positions", "all") not in ("all", "prompt", "completion"):
        raise where.error("expected 'all', 'prompt' or 'completion'", "sweep", "positions")
    if sweep.get("refine_rounds", 3) < 1:
        raise where.error("must be at least 1", "sweep", "refine_rounds")
    if fit.get("starts", 16) < 1:
        raise where.error("must be at least 1", "fit", "starts")
    if not 0.5 <= fit.get("budget_level", 0.5) < 1:
        raise where.error(
            f"must be a one-sided confidence in [0.5, 1) (0.5: no margin), got "
            f"{fit['budget_level']}",
            "fit",
            "budget_level",
        )

    def located(value: str, key: str) -> str:
        if value == "default" or value.startswith("default:"):
            return value
        path = Path(value)
        if not path.is_absolute() and not source.startswith("<"):
            path = Path(source).parent / path
        if not path.exists():
            raise where.error(f"no such file or directory: {path}", "data", key)
        return str(path)

    raw_source = data.get("source", "default:optimism")
    if isinstance(raw_source, str):
        listed = [raw_source]
    elif (
        isinstance(raw_source, list) and raw_source and all(isinstance(x, str) for x in raw_source)
    ):
        listed = list(raw_source)
    else:
        raise where.error(
            f"expected a data source or a non-empty list of them, got {raw_source!r}",
            "data",
            "source",
        )
    if len(set(listed)) != len(listed):
        raise where.error("a source is listed twice", "data", "source")
    located_sources = [located(x, "source") for x in listed]
    source_value = located_sources[0]
    concept_ids: tuple[int, ...] | None = None
    if "concepts" in data:
        wanted = data["concepts"]
        if data.get("format") != "axbench":
            raise where.error(
                'selects concepts of an AxBench file: needs format = "axbench" (list several '
                "sources to run several concepts)",
                "data",
                "concepts",
            )
        if wanted != "all":
            if (
                not isinstance(wanted, list)
                or not wanted
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in wanted)
                or len(set(wanted)) != len(wanted)
            ):
                raise where.error(
                    f'expected "all" or a list of distinct concept ids, got {wanted!r}',
                    "data",
                    "concepts",
                )
            concept_ids = tuple(wanted)
    transfer = located(data["transfer"], "transfer") if "transfer" in data else None
    if "transfer_pairs" in data and transfer is None:
        raise where.error("needs [data] transfer", "data", "transfer_pairs")

    methods_raw = raw.get("method", [])
    if not isinstance(methods_raw, list) or not methods_raw:
        raise where.error("at least one [[method]] table is needed", "", "method")
    methods: list[MethodSpec] = []
    for i, m in enumerate(methods_raw):
        _check_table(where, m, _METHOD, "method", i)
        for key in ("kind", "objective"):
            if key not in m:
                raise where.error(f"missing key {key!r}", "method", None, i)
        if m["kind"] not in KINDS:
            raise where.error(f"expected one of {KINDS}", "method", "kind", i)
        if m["objective"] not in ("diffmean", "sft", "reps", "split"):
            raise where.error("expected diffmean, sft, reps or split", "method", "objective", i)
        if m["objective"] == "diffmean" and m["kind"] != "vector":
            raise where.error("diffmean makes vectors only", "method", "objective", i)
        _check_train(where, m.get("train", {}), "method.train", i)
        if "preset" in m:
            try:
                make_config(m["preset"])
            except ValueError as e:
                raise where.error(str(e), "method", "preset", i) from None
        if "grid" in m:
            from unisteer.scoring.grid import parse_grid

            try:
                parse_grid(m["grid"])
            except ValueError as e:
                raise where.error(str(e), "method", "grid", i) from None
        name = m.get("name", f"{m['kind']}-{m['objective']}")
        if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            raise where.error("use letters, digits, '.', '_' or '-'", "method", "name", i)
        spec = MethodSpec(
            kind=m["kind"],
            objective=m["objective"],
            name=name,
            preset=m.get("preset"),
            train=dict(m.get("train", {})),
            grid=m.get("grid"),
        )
        layers = m.get("layers")
        if isinstance(layers, str):
            if not LAYER_RULE.fullmatch(layers):
                raise where.error(
                    f"expected a list of blocks, 'all' or 'every:K', got {layers!r}",
                    "method",
                    "layers",
                    i,
                )
            expanded = [dataclasses.replace(spec, layers=layers)]
        elif layers is not None:
            if (
                not isinstance(layers, list)
                or not layers
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in layers)
                or min(layers) < 0
                or len(set(layers)) != len(layers)
            ):
                raise where.error(
                    f"expected distinct block indices (0 or more), 'all' or 'every:K', "
                    f"got {layers!r}",
                    "method",
                    "layers",
                    i,
                )
            expanded = [at_layer(spec, x) for x in layers]
        else:
            expanded = [spec]
        for one in expanded:
            if any(x.name == one.name for x in methods):
                raise where.error(
                    f"two methods are named {one.name!r}; give one a name", "method", None, i
                )
            methods.append(one)
    return Experiment(
        name=raw.get("name", Path(source).stem),
        output=raw.get("output", f"unisteer-out/{raw.get('name', Path(source).stem)}"),
        methods=tuple(methods),
        seed=raw.get("seed", 0),
        model=model.get("name", "smollm2-135m-instruct"),
        layer=model.get("layer"),
        data=source_value,
        sources=tuple(located_sources) if len(located_sources) > 1 else (),
        concept_ids=concept_ids,
        data_format=data.get("format", "auto"),
        invert=data.get("invert"),
        train_pairs=data.get("train_pairs"),
        test_pairs=data.get("test_pairs"),
        sweep_train_pairs=data.get("sweep_train_pairs"),
        test_fraction=float(data.get("test_fraction", 0.2)),
        transfer=transfer,
        transfer_pairs=data.get("transfer_pairs"),
        max_tokens=data.get("max_tokens"),
        lenient=data.get("lenient", False),
        train=dict(raw.get("train", {})),
        sweep_points=sweep.get("points", 21),
        reduction=sweep.get("reduction", "sum"),
        include_suffix=sweep.get("include_suffix", False),
        positions=sweep.get("positions", "all"),
        adaptive=sweep.get("adaptive", False),
        refine_rounds=sweep.get("refine_rounds", 3),
        fit_starts=fit.get("starts", 16),
        max_util_drop=float(fit.get("max_util_drop", 1.0)),
        budget_level=float(fit.get("budget_level", 0.5)),
        sample_prompts=report.get("samples", 3),
        sample_tokens=report.get("tokens", 48),
        control=control,
        kappas=kappas,
        sample_kappa=sample_kappa,
        source=source,
    )


def _control(
    where: _Where, table: dict[str, Any] | None
) -> tuple[ControlSpec | None, tuple[float, ...], float | None]:
    """``[control]``: the controller, its KL budgets and the kappa of the report's trace."""
    if table is None:
        return None, (), None
    _check_table(where, table, _CONTROL, "control")
    from unisteer.control.spec import CONTROLLERS, ControlSpec

    name = table.get("controller", "kl_budget")
    if name not in CONTROLLERS or name == "fixed":
        raise where.error(
            "expected kl_budget or static_kl (a fixed m is what the sweep already measures)",
            "control",
            "controller",
        )
    kappas = table.get("kappas")
    if kappas is None:
        raise where.error("missing key 'kappas' (KL budgets in nats, inf allowed)", "control")
    if not kappas or not all(
        isinstance(x, int | float) and not isinstance(x, bool) and x >= 0 for x in kappas
    ):
        raise where.error(
            f"expected a non-empty list of KL budgets >= 0 (inf allowed), got {kappas!r}",
            "control",
            "kappas",
        )
    fields = {key: table[key] for key in ("m_max", "k", "q", "points") if key in table}
    for key, value in fields.items():
        try:
            ControlSpec(name, **{key: value})
        except ValueError as e:
            raise where.error(str(e), "control", key) from None
    sample = table.get("sample_kappa")
    if sample is not None and not sample >= 0:
        raise where.error(f"must be >= 0 (inf allowed), got {sample}", "control", "sample_kappa")
    return ControlSpec(name, **fields), tuple(float(x) for x in kappas), sample


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment file (or a built-in one by name: ``default``,
    ``dynamics``, ``fit_validation``)."""
    p = Path(path)
    if not p.exists() and re.fullmatch(r"[A-Za-z0-9_]+", str(path)):
        return builtin_experiment(str(path))
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ExperimentError(f"cannot read the experiment file {p}: {e.strerror or e}") from None
    return parse_experiment(text, str(p))


BUILTIN = (
    "default",
    "dynamics",
    "fit_validation",
    "layers",
    "multiturn",
    "split_vs_baselines",
)


def builtin_experiment(name: str) -> Experiment:
    if name not in BUILTIN:
        raise ExperimentError(
            f"no experiment file {name!r} and no built-in experiment of that name "
            f"(built-in: {', '.join(BUILTIN)})"
        )
    text = (resources.files("unisteer.experiment") / "builtin" / f"{name}.toml").read_text("utf-8")
    return parse_experiment(text, f"<built-in {name}>")


PROFILES = ("normal", "quick", "full")


def quick_methods(methods: tuple[MethodSpec, ...]) -> tuple[MethodSpec, ...]:
    """The methods, in order, that bring a kind, an objective or a layer (or layer rule) no
    earlier kept method has: what a smoke test must touch (the default's ten methods give six:
    the four vector objectives, LoRA SFT and local-weight SFT)."""
    kept: list[MethodSpec] = []
    seen: set[tuple[str, object]] = set()
    for m in methods:
        keys = {("kind", m.kind), ("objective", m.objective), ("layer", (m.layer, m.layers))}
        if not keys <= seen:
            kept.append(m)
            seen |= keys
    return tuple(kept)


def with_profile(exp: Experiment, profile: str) -> Experiment:
    """The experiment at another size.

    ``quick``: the methods that bring a new kind, objective or layer (:func:`quick_methods`:
    every kind, every objective and every layer at least once), 4 training pairs, sweeps of 7
    points (the fewest a fit accepts) on 3 train and 3 test pairs and no adaptive refinement
    (3 pairs cannot place its points; the tests cover it), one epoch, 4 fit starts, one
    generated sample of 16 tokens: a smoke test of the whole pipeline in under 3 minutes.
    ``full``: every pair of both splits, trained and swept, 21 points, two epochs (the paper's
    Psychopathy and PowerSeeking setting). The output folder gets the profile's name as a
    suffix.
    """
    if profile == "normal":
        return exp
    if profile == "quick":
        return exp.replace(
            methods=quick_methods(exp.methods),
            train_pairs=4,
            test_pairs=3,
            sweep_train_pairs=3,
            transfer_pairs=3 if exp.transfer is not None else None,
            sweep_points=7,
            train={**exp.train, "epochs": 1},
            fit_starts=min(exp.fit_starts, 4),
            sample_prompts=min(exp.sample_prompts, 1),
            sample_tokens=min(exp.sample_tokens, 16),
            adaptive=False,
            output=f"{exp.output}-quick",
        )
    if profile == "full":
        return exp.replace(
            train_pairs=None,
            test_pairs=None,
            sweep_train_pairs=None,
            sweep_points=max(21, exp.sweep_points),
            train={**exp.train, "epochs": 2},
            output=f"{exp.output}-full",
        )
    raise ExperimentError(f"unknown profile {profile!r}; expected one of {PROFILES}")
