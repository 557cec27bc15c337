"""The AxBench steering protocol (Wu et al. 2025), as pure functions on tables.

* **Instructions.** For concept ``c``, 10 AlpacaEval instructions:
  ``DataFrame(805 instructions in canonical order).sample(10, random_state=c)``, numbered
  ``input_id`` 0–9 in the order ``sample`` returns them.
* **Split.** ``input_id`` 0–4 *select* the factor, 5–9 *report* (AxBench's split ratio 0.5).
* **Grid.** Every instruction is generated at every factor; the factor is the multiplier ``m``
  of the delta (no ``max_act`` rescaling: the factor is exactly what steers).
* **Generation.** Up to 128 new tokens, sampling at temperature 1.0 (with AxBench's effective
  top-k of 50, Hugging Face's default when it sampled), the delta applied at every position.
* **Ratings.** concept, instruction and fluency, each 0/1/2; per generation the harmonic mean
  ``3 / (1/c + 1/i + 1/f)``, 0 if any rating is 0.
* **Selection.** Per method and concept: the factor with the highest mean HM on the selection
  split (ties: the smallest factor), reported by its mean HM (and sub-scores) on the report
  split; then means over concepts. Winrate against a baseline: per concept 1 if better, 0.5 if
  tied, 0 if worse, averaged.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from unisteer.errors import DataError
from unisteer.evaluate.axbench.concepts import Concept

#: AxBench's 14-factor grid (LoRA, LoReFT and the rank-1 baselines).
AXBENCH_FACTORS: tuple[float, ...] = (
    0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.5, 3.0, 4.0, 5.0,
)  # fmt: skip
#: RePS's grid for un-normalised steering vectors (trained on {2, 4, ..., 20}).
VECTOR_FACTORS: tuple[float, ...] = (
    2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 25.0, 30.0, 40.0, 50.0,
)  # fmt: skip
#: KL budgets (nats per token) swept under the ``kl_budget`` and ``static_kl`` controllers.
KAPPA_FACTORS: tuple[float, ...] = (0.05, 0.2, 0.5, 2.0)
N_INSTRUCTIONS = 10
ALPACA_EVAL_SIZE = 805
ALPACA_FILE = "alpaca_eval_instructions.json"
SCORE_COLUMNS = ("concept_score", "instruction_score", "fluency_score")


@dataclass(frozen=True)
class AxBenchSettings:
    """Generation settings of the protocol (stored with the generations; resuming with other
    settings is refused)."""

    n_instructions: int = N_INSTRUCTIONS
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = 50
    positions: str = "all"
    seed: int = 42

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_factors(kind: str | None) -> tuple[float, ...]:
    """The grid for a delta kind: RePS's for vectors, AxBench's for LoRA and local weights,
    ``(0.0,)`` (one unsteered entry) without a delta."""
    if kind is None:
        return (0.0,)
    return VECTOR_FACTORS if kind == "vector" else AXBENCH_FACTORS


# -- instructions -------------------------------------------------------------------------------


def find_alpaca_eval(path: str | Path | None = None) -> Path:
    """The AlpacaEval instructions file: ``path`` (a file or its folder), else
    ``$UNISTEER_ALPACA_EVAL``, else ``../shared/data/alpaca_eval/`` from the working directory."""
    candidates: list[Path] = []
    if path is not None:
        candidates.append(Path(path))
    elif os.environ.get("UNISTEER_ALPACA_EVAL"):
        candidates.append(Path(os.environ["UNISTEER_ALPACA_EVAL"]))
    else:
        candidates.append(Path.cwd().parent / "shared" / "data" / "alpaca_eval")
        candidates.append(Path.cwd() / "shared" / "data" / "alpaca_eval")
    for c in candidates:
        f = c / ALPACA_FILE if c.is_dir() else c
        if f.is_file():
            return f
    raise DataError(
        f"cannot find the AlpacaEval instructions (looked at {[str(c) for c in candidates]}); "
        f"pass the path to {ALPACA_FILE} (805 rows with an 'instruction' field, canonical "
        "order) or set UNISTEER_ALPACA_EVAL"
    )


def load_alpaca_instructions(path: str | Path | None = None) -> pd.DataFrame:
    """The 805 AlpacaEval instructions in canonical order (index 0..804)."""
    f = find_alpaca_eval(path)
    try:
        rows = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {f} as JSON: {e}") from None
    if not isinstance(rows, list) or not all(
        isinstance(r, dict) and isinstance(r.get("instruction"), str) for r in rows
    ):
        raise DataError(f"{f}: expected a JSON list of objects with a string 'instruction'")
    frame = pd.DataFrame(rows)
    if len(frame) != ALPACA_EVAL_SIZE:
        raise DataError(
            f"{f} has {len(frame)} instructions, AlpacaEval has {ALPACA_EVAL_SIZE}: sampling "
            "would not match AxBench's"
        )
    return frame


def sample_instructions(
    instructions: pd.DataFrame | Sequence[str], concept_id: int, n: int = N_INSTRUCTIONS
) -> list[str]:
    """AxBench's instructions for a concept: ``sample(n, random_state=concept_id)``."""
    frame = (
        instructions
        if isinstance(instructions, pd.DataFrame)
        else pd.DataFrame({"instruction": list(instructions)})
    )
    return [str(x) for x in frame.sample(n, random_state=concept_id)["instruction"].tolist()]


def split_name(input_id: int, n: int = N_INSTRUCTIONS) -> str:
    """``"select"`` for the first half of the instructions, ``"report"`` for the rest."""
    return "select" if input_id < n // 2 else "report"


def steering_rows(
    concept: Concept,
    instructions: pd.DataFrame | Sequence[str],
    factors: Sequence[float],
    n: int = N_INSTRUCTIONS,
) -> pd.DataFrame:
    """One row per (instruction, factor) of a concept: ``concept_id, concept, input_id, split,
    instruction, factor``."""
    chosen = sample_instructions(instructions, concept.concept_id, n)
    rows = [
        {
            "concept_id": concept.concept_id,
            "concept": concept.concept,
            "input_id": i,
            "split": split_name(i, n),
            "instruction": text,
            "factor": float(f),
        }
        for i, text in enumerate(chosen)
        for f in factors
    ]
    return pd.DataFrame(rows)


# -- scores ---------------------------------------------------------------------------------


def harmonic_mean(concept: float, instruction: float, fluency: float) -> float:
    """``3 / (1/c + 1/i + 1/f)``, and 0 when any rating is 0 (or missing)."""
    values = (concept, instruction, fluency)
    if any(not math.isfinite(v) or v <= 0 for v in values):
        return 0.0
    return 3.0 / sum(1.0 / v for v in values)


def add_harmonic_mean(scores: pd.DataFrame, prefix: str = "") -> pd.DataFrame:
    """``scores`` with a ``{prefix}hm`` column from the three ``{prefix}*_score`` columns."""
    cols = [prefix + c for c in SCORE_COLUMNS]
    values = scores[cols].to_numpy(dtype=np.float64)
    ok = np.isfinite(values).all(1) & (values > 0).all(1)
    hm = np.zeros(len(scores))
    hm[ok] = 3.0 / (1.0 / values[ok]).sum(1)
    out = scores.copy()
    out[prefix + "hm"] = hm
    return out


def select_factors(scores: pd.DataFrame, prefix: str = "") -> pd.DataFrame:
    """Per (method, concept): the factor chosen on the selection split and the report scores.

    ``scores`` has one row per generation with ``method, concept_id, input_id, split, factor``
    and the ``{prefix}hm`` and ``{prefix}*_score`` columns. Returns ``method, concept_id,
    factor, {prefix}select_hm, {prefix}hm, {prefix}concept_score, ...`` (report-split means at
    the chosen factor).
    """
    hm = prefix + "hm"
    subs = [prefix + c for c in SCORE_COLUMNS]
    rows = []
    for (method, cid), g in scores.groupby(["method", "concept_id"], sort=True):
        by_factor = g.groupby(["split", "factor"])[[hm, *subs]].mean()
        factors = sorted(g["factor"].unique())
        select = [
            by_factor.loc[("select", f), hm] if ("select", f) in by_factor.index else np.nan
            for f in factors
        ]
        if all(np.isnan(select)):
            continue
        best = factors[int(np.nanargmax(select))]  # first maximum: the smallest factor
        row: dict[str, Any] = {
            "method": method,
            "concept_id": int(cid),
            "factor": float(best),
            prefix + "select_hm": float(np.nanmax(select)),
        }
        for col in (hm, *subs):
            key = ("report", best)
            row[col] = float(by_factor.loc[key, col]) if key in by_factor.index else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(selected: pd.DataFrame, prefix: str = "") -> pd.DataFrame:
    """Per method: the means over concepts of the report scores at the chosen factors."""
    cols = [prefix + "hm", *(prefix + c for c in SCORE_COLUMNS), prefix + "select_hm"]
    out = selected.groupby("method", sort=True)[cols].mean()
    out.insert(0, "n_concepts", selected.groupby("method", sort=True).size())
    return out.reset_index()


def winrate(selected: pd.DataFrame, method: str, baseline: str, prefix: str = "") -> float:
    """Share of concepts (scored by both) where ``method`` beats ``baseline`` (ties = 0.5)."""
    col = prefix + "hm"
    a = selected[selected["method"] == method].set_index("concept_id")[col]
    b = selected[selected["method"] == baseline].set_index("concept_id")[col]
    common = a.index.intersection(b.index)
    if len(common) == 0:
        raise ValueError(f"no concept is scored for both {method!r} and {baseline!r}")
    x, y = a.loc[common].to_numpy(), b.loc[common].to_numpy()
    return float(np.mean(np.where(x > y, 1.0, np.where(x == y, 0.5, 0.0))))
