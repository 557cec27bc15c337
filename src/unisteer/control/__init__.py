"""Adaptive multipliers: ``m_t`` chosen token by token (arXiv 2602.02343 §7, open question 3).

>>> from unisteer.control import kl_budget, generate_controlled, sweep_kappa
>>> out = generate_controlled(model, tok, ["Tell me about the sea."], delta,
...                           kl_budget(0.5, m_max=8.0))
>>> out[0].text, out[0].m          # the text, and m_t of every token

:mod:`~unisteer.control.controllers` (what a controller is; ``fixed``, ``kl_budget``),
:mod:`~unisteer.control.generate` (generation), :mod:`~unisteer.control.score` (teacher-forced
PrefOdds and UtilOdds, a sweep over kappa), :mod:`~unisteer.control.calibrate` (``static_kl``),
:mod:`~unisteer.control.spec` (a family of controllers indexed by what a sweep varies: what the
CLI, the AxBench run and the experiment files take).
"""

from __future__ import annotations

from unisteer.control.calibrate import Calibration, choose_static, kl_profile, static_kl
from unisteer.control.controllers import Controller, fixed, kl_budget, kl_divergence
from unisteer.control.generate import ControlledGeneration, generate_controlled
from unisteer.control.score import score_controlled, sweep_controller, sweep_kappa
from unisteer.control.spec import ControlSpec, control_spec

__all__ = [
    "Calibration",
    "ControlSpec",
    "ControlledGeneration",
    "Controller",
    "choose_static",
    "control_spec",
    "fixed",
    "generate_controlled",
    "kl_budget",
    "kl_divergence",
    "kl_profile",
    "score_controlled",
    "static_kl",
    "sweep_controller",
    "sweep_kappa",
]
