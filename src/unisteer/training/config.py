"""Training hyper-parameters, their defaults, and the paper's settings as named presets.

``TrainConfig`` holds everything that decides a training run (so a checkpoint can refuse to
resume under different settings). Defaults suit a small model on CPU; the paper's reference
settings (``paper_spec.md`` §4.3, §5.2, §5.3: Gemma-2-9B / Qwen-2.5-7B on AxBench,
PowerSeeking and Psychopathy) are presets named ``{dataset}-{model}-{kind}-{objective}``,
e.g. ``"psychopathy-gemma-vector-split"``. A preset sets learning rate, batch size, gradient
accumulation, epochs, direction (``add`` only, or ``add+sub`` = bidirectional) and the SPLIT
weights; the objective forms stay at their defaults (per-pair SPLIT hinge, RePS normalised by
completion length) unless you also pass ``split_form="minibatch"`` or
``reps_normalizer="sequence"``, which reproduce the reference code.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from unisteer.core.delta import KINDS, Kind

PositionsMode = Literal["all", "prompt", "completion"]

#: Multipliers sampled during training, per kind (SPEC §4).
DEFAULT_MULTIPLIERS: dict[str, tuple[float, ...]] = {
    "vector": tuple(float(x) for x in range(2, 21, 2)),
    "lora": tuple(round(0.2 * k, 1) for k in range(1, 11)),
    "local_weight": tuple(round(0.2 * k, 1) for k in range(1, 11)),
}

#: Default learning rates per kind for small models.
DEFAULT_LR: dict[str, float] = {"vector": 0.02, "lora": 0.01, "local_weight": 0.002}


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (``None`` means "the default for the kind")."""

    lr: float | None = None
    epochs: int = 3
    batch_size: int = 4
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    multipliers: tuple[float, ...] | None = None
    bidirectional: bool = True
    positions: PositionsMode = "all"
    include_suffix: bool = False
    rank: int = 4
    init_std: float | None = None
    seed: int = 0
    # SPLIT
    lambda_p: float = 1.0
    lambda_n: float = 0.5
    gamma: float = 5.0
    theta: float = 0.5
    split_form: Literal["pair", "minibatch"] = "pair"
    # RePS
    reps_normalizer: Literal["completion", "sequence"] = "completion"
    # bookkeeping (not part of the optimisation, so not compared on resume)
    checkpoint_every: int = field(default=50, compare=False)

    def __post_init__(self) -> None:
        self._check_types()
        checks: list[tuple[bool, str]] = [
            (self.lr is None or self.lr > 0, f"lr must be positive, got {self.lr}"),
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}"),
            (self.grad_accum >= 1, f"grad_accum must be at least 1, got {self.grad_accum}"),
            (self.max_grad_norm > 0, f"max_grad_norm must be positive, got {self.max_grad_norm}"),
            (self.rank >= 1, f"rank must be at least 1, got {self.rank}"),
            (
                self.checkpoint_every >= 1,
                f"checkpoint_every must be at least 1, got {self.checkpoint_every}",
            ),
            (
                self.positions in ("all", "prompt", "completion"),
                f"positions must be 'all', 'prompt' or 'completion', got {self.positions!r}",
            ),
        ]
        if self.multipliers is not None:
            checks.append((len(self.multipliers) > 0, "multipliers must not be empty"))
            checks.append(
                (all(m > 0 for m in self.multipliers), "multipliers must be positive numbers")
            )
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def _check_types(self) -> None:
        """Each value has its field's type (an int where an int is meant: ``epochs = 1.5`` or
        ``"one"`` is refused here, not deep inside training)."""
        ints = {"epochs", "batch_size", "grad_accum", "rank", "seed", "checkpoint_every"}
        floats = {"max_grad_norm", "lambda_p", "lambda_n", "gamma", "theta"}
        optional_floats = {"lr", "init_std"}
        bools = {"bidirectional", "include_suffix"}

        def number(v: object) -> bool:
            return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

        for name in ints:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"{name} must be an integer, got {v!r}")
        for name in floats | optional_floats:
            v = getattr(self, name)
            if not (number(v) or (v is None and name in optional_floats)):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        for name in bools:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.multipliers is not None and not all(number(m) for m in self.multipliers):
            raise ValueError(f"multipliers must be finite numbers, got {self.multipliers!r}")

    def learning_rate(self, kind: Kind) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[kind]

    def grid(self, kind: Kind) -> tuple[float, ...]:
        return self.multipliers if self.multipliers is not None else DEFAULT_MULTIPLIERS[kind]

    def objective_options(self, objective: str) -> dict[str, Any]:
        if objective == "sft":
            return {"bidirectional": self.bidirectional}
        if objective == "split":
            return {
                "lambda_p": self.lambda_p,
                "lambda_n": self.lambda_n,
                "gamma": self.gamma,
                "theta": self.theta,
                "form": self.split_form,
                "bidirectional": self.bidirectional,
            }
        if objective == "reps":
            return {"normalizer": self.reps_normalizer}
        return {}

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if out["multipliers"] is not None:
            out["multipliers"] = list(out["multipliers"])
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        return make_config(**values)


def make_config(preset: str | None = None, **overrides: Any) -> TrainConfig:
    """A config from a preset (optional) and keyword overrides; unknown keys are errors and
    ``None`` values keep the preset's (or the default) value."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(
            f"unknown training option(s) {', '.join(unknown)}; valid options: "
            + ", ".join(sorted(names))
        )
    values: dict[str, Any] = dict(PRESETS[_check_preset(preset)]) if preset else {}
    values.update({k: v for k, v in overrides.items() if v is not None})  # None: keep default
    if values.get("multipliers") is not None:
        values["multipliers"] = tuple(float(m) for m in values["multipliers"])
    return TrainConfig(**values)


def _check_preset(name: str) -> str:
    if name not in PRESETS:
        close = [p for p in PRESETS if any(part in p for part in name.split("-") if part)]
        hint = f" Similar: {', '.join(close[:8])}." if close else ""
        raise ValueError(
            f"unknown preset {name!r}. Presets are named DATASET-MODEL-KIND-OBJECTIVE with "
            f"DATASET in axbench/powerseeking/psychopathy, MODEL in gemma/qwen, KIND in "
            f"{'/'.join(KINDS)}, OBJECTIVE in sft/reps/split.{hint}"
        )
    return name


def preset_kind_objective(name: str) -> tuple[str, str]:
    """The kind and objective a preset was written for."""
    _check_preset(name)
    parts = name.split("-")
    return parts[2], parts[3]


def _presets() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}

    def put(
        dataset: str,
        model: str,
        kind: str,
        objective: str,
        bs: int,
        ga: int,
        ep: int,
        lr: float,
        **extra: Any,
    ) -> None:
        out[f"{dataset}-{model}-{kind}-{objective}"] = {
            "batch_size": bs,
            "grad_accum": ga,
            "epochs": ep,
            "lr": lr,
            **extra,
        }

    # SPLIT, paper_spec.md §4.3: (bidirectional = pairs "add+sub"), bs, GA, epochs, lr, λ_n, γ, θ
    split_rows = [
        ("axbench", "gemma", "local_weight", False, 2, 2, 12, 0.04, 0.3, 3.5, 0.6),
        ("axbench", "gemma", "lora", False, 2, 2, 12, 0.04, 0.5, 5.0, 0.45),
        ("axbench", "gemma", "vector", False, 4, 1, 18, 0.08, 0.6, 4.0, 0.5),
        ("axbench", "qwen", "local_weight", False, 2, 2, 12, 0.04, 0.3, 3.5, 0.6),
        ("axbench", "qwen", "lora", False, 2, 2, 12, 0.04, 0.5, 5.0, 0.45),
        ("axbench", "qwen", "vector", False, 2, 2, 18, 0.08, 0.6, 6.0, 0.5),
        ("powerseeking", "gemma", "local_weight", False, 2, 2, 2, 0.01, 0.5, 5.0, 0.4),
        ("powerseeking", "gemma", "lora", False, 2, 2, 2, 0.01, 0.5, 5.0, 0.4),
        ("powerseeking", "gemma", "vector", False, 4, 1, 2, 0.08, 0.5, 5.0, 0.5),
        ("powerseeking", "qwen", "local_weight", False, 2, 2, 2, 0.01, 0.6, 5.0, 0.5),
        ("powerseeking", "qwen", "lora", True, 2, 2, 2, 0.01, 0.5, 4.0, 0.5),
        ("powerseeking", "qwen", "vector", True, 4, 1, 2, 0.08, 0.6, 5.0, 0.5),
        ("psychopathy", "gemma", "local_weight", False, 4, 2, 2, 0.01, 0.5, 5.0, 0.4),
        ("psychopathy", "gemma", "lora", True, 4, 2, 2, 0.01, 0.5, 5.0, 0.4),
        ("psychopathy", "gemma", "vector", True, 4, 1, 2, 0.08, 0.5, 8.0, 0.3),
        ("psychopathy", "qwen", "local_weight", False, 4, 2, 1, 0.01, 0.5, 6.0, 0.4),
        ("psychopathy", "qwen", "lora", True, 4, 2, 1, 0.01, 0.5, 6.0, 0.4),
        ("psychopathy", "qwen", "vector", True, 4, 1, 2, 0.08, 0.6, 4.0, 0.5),
    ]
    for ds, model, kind, bidi, bs, ga, ep, lr, lam_n, gamma, theta in split_rows:
        put(
            ds, model, kind, "split", bs, ga, ep, lr,
            bidirectional=bidi, lambda_p=1.0, lambda_n=lam_n, gamma=gamma, theta=theta,
        )  # fmt: skip

    # SFT (§5.2, always bidirectional) and RePS (§5.3) per dataset, model and kind.
    for model in ("gemma", "qwen"):
        for kind in ("local_weight", "lora"):
            put("axbench", model, kind, "sft", 2, 6, 12, 0.08)
        put("axbench", model, "vector", "sft", 4, 1, 18, 0.08)
        put("axbench", model, "vector", "reps", 4, 1, 18, 0.08)
        for ds in ("powerseeking", "psychopathy"):
            for kind in ("local_weight", "lora"):
                put(ds, model, kind, "sft", 4, 2, 2, 0.01)
                put(ds, model, kind, "reps", 2 if (model, kind) == ("qwen", "local_weight")
                    else 4, 2, 2, 0.01)  # fmt: skip
            put(ds, model, "vector", "sft", 4, 1, 2, 0.08)
            put(ds, model, "vector", "reps", 4, 1, 2, 0.08)
    put("axbench", "gemma", "local_weight", "reps", 2, 6, 12, 0.08)
    put("axbench", "gemma", "lora", "reps", 2, 6, 12, 0.08)
    put("axbench", "qwen", "local_weight", "reps", 2, 6, 12, 0.08)
    put("axbench", "qwen", "lora", "reps", 4, 1, 18, 0.08)
    return out


#: The paper's reference settings, by name (see the module docstring).
PRESETS: dict[str, dict[str, Any]] = _presets()
