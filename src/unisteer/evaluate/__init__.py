"""Evaluating steered models: the AxBench protocol, judges and pair accuracy.

* :mod:`~unisteer.evaluate.axbench` — the AxBench evaluation:
  :mod:`~unisteer.evaluate.axbench.protocol` (the protocol as pure functions: instruction
  sampling, factor grid, harmonic mean, factor selection, winrate),
  :mod:`~unisteer.evaluate.axbench.run` (generate, rate, report; resumable) and
  :func:`eval_axbench` (:mod:`~unisteer.evaluate.axbench.job`, what ``unisteer eval axbench``
  calls).
* :mod:`~unisteer.evaluate.judges` — judges share one interface (:class:`Judge`):
  :class:`HTTPJudge` (any OpenAI-compatible endpoint), :class:`LocalJudge` (a local Hugging
  Face model) and :class:`ProxyJudge` (offline, LLM-free; its scores are named ``proxy_*``);
  :func:`make_judge` picks one by name.
* :mod:`~unisteer.evaluate.accuracy` — :func:`pair_accuracy`, how often the steered model
  prefers A_p over A_n, and :func:`eval_accuracy` (what ``unisteer eval accuracy`` calls).

Heavy pieces (scikit-learn, embeddings) load only when used.
"""

from unisteer.evaluate.accuracy import AccuracyResult, accuracy_by_m, eval_accuracy, pair_accuracy
from unisteer.evaluate.axbench.concepts import Concept, read_concepts, resolve_concept
from unisteer.evaluate.axbench.job import delta_dirs_by_concept, eval_axbench
from unisteer.evaluate.axbench.protocol import (
    AXBENCH_FACTORS,
    VECTOR_FACTORS,
    AxBenchSettings,
    add_harmonic_mean,
    default_factors,
    harmonic_mean,
    load_alpaca_instructions,
    sample_instructions,
    select_factors,
    steering_rows,
    summarize,
    winrate,
)
from unisteer.evaluate.axbench.run import AxBenchReport, build_report, rescore, run_axbench
from unisteer.evaluate.judges.base import Judge, JudgeError, PromptJudge, RatingRequest, Score
from unisteer.evaluate.judges.http import HTTPJudge
from unisteer.evaluate.judges.local import LocalJudge
from unisteer.evaluate.judges.prompts import CRITERIA, Criterion, build_prompt, parse_rating
from unisteer.evaluate.judges.proxy import ProxyJudge
from unisteer.evaluate.judges.proxy_concept import concept_auroc
from unisteer.evaluate.judges.select import make_judge

__all__ = [
    "AXBENCH_FACTORS",
    "CRITERIA",
    "VECTOR_FACTORS",
    "AccuracyResult",
    "AxBenchReport",
    "AxBenchSettings",
    "Concept",
    "Criterion",
    "HTTPJudge",
    "Judge",
    "JudgeError",
    "LocalJudge",
    "PromptJudge",
    "ProxyJudge",
    "RatingRequest",
    "Score",
    "accuracy_by_m",
    "add_harmonic_mean",
    "build_prompt",
    "build_report",
    "concept_auroc",
    "default_factors",
    "delta_dirs_by_concept",
    "eval_accuracy",
    "eval_axbench",
    "harmonic_mean",
    "load_alpaca_instructions",
    "make_judge",
    "pair_accuracy",
    "parse_rating",
    "read_concepts",
    "rescore",
    "resolve_concept",
    "run_axbench",
    "sample_instructions",
    "select_factors",
    "steering_rows",
    "summarize",
    "winrate",
]
