"""Experiments: TOML files (:mod:`.config`), cached stages (:mod:`.stages`) and the runner
(:mod:`.runner`) behind ``unisteer run``."""

from unisteer.experiment.config import (
    BUILTIN,
    Experiment,
    ExperimentError,
    MethodSpec,
    builtin_experiment,
    load_experiment,
    parse_experiment,
)
from unisteer.experiment.runner import run_experiment

__all__ = [
    "BUILTIN",
    "Experiment",
    "ExperimentError",
    "MethodSpec",
    "builtin_experiment",
    "load_experiment",
    "parse_experiment",
    "run_experiment",
]
