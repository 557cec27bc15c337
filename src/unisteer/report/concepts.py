"""An experiment over several concepts: the per-concept table, the per-method means with
confidence intervals over concepts, and the top folder's report.

Each concept is a complete experiment in ``concepts/<name>/`` (its own ``results.json`` and
``report.html``); this module reads their results and writes, in the experiment's folder,
``concepts.parquet`` (one row per concept × method), ``methods.parquet`` (one row per method:
mean, standard deviation and a two-sided 95% Student-t interval over concepts of each
measure), ``results.json`` (both tables and every concept's results), ``summary.md`` and
``report.html``. A measure a concept has no value for (no fit, no finite choice of m) is left
out of that method's mean, and ``n`` says over how many concepts each mean is.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from scipy import stats

from unisteer.files import json_safe, write_json_atomic, write_parquet_atomic, write_text_atomic
from unisteer.report.results import ExperimentResults

#: The measures aggregated over concepts (``EvalResult`` on the test pairs at the chosen m,
#: and the fits' train → test R², arXiv 2602.02343 Eq. 12 and 15).
MEASURES = (
    "chosen_m",
    "pref_gain",
    "util_drop",
    "accuracy",
    "accuracy_m0",
    "r2_preference",
    "r2_utility",
)
LEVEL = 0.95


@dataclass(frozen=True)
class ConceptRun:
    """One concept's experiment: its name, data and results."""

    name: str
    source: str
    concept_id: int | None
    directory: Path
    results: ExperimentResults


@dataclass
class ConceptsResults:
    """What an experiment over several concepts produced; ``to_dict()`` is ``results.json``."""

    name: str
    source: str
    model: str
    concepts: list[ConceptRun]
    per_concept: pd.DataFrame
    per_method: pd.DataFrame
    wall_seconds: float = 0.0
    peak_memory_mb: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(
            json_safe(
                {
                    "experiment": {"name": self.name, "source": self.source, "model": self.model},
                    "concepts": [
                        {
                            "name": c.name,
                            "source": c.source,
                            "concept_id": c.concept_id,
                            "directory": str(c.directory),
                            "results": c.results.to_dict(),
                        }
                        for c in self.concepts
                    ],
                    "per_method": self.per_method.to_dict(orient="records"),
                    "per_concept": self.per_concept.to_dict(orient="records"),
                    "wall_seconds": self.wall_seconds,
                    "peak_memory_mb": self.peak_memory_mb,
                }
            )
        )


def _r2(m: Any, curve: str) -> float | None:
    value = m.fit.r2().get(curve, {})
    found = value.get("train_to_test", value.get("train"))
    return None if found is None else float(found)


def concept_table(runs: Sequence[ConceptRun]) -> pd.DataFrame:
    """One row per concept × method, the measures of :data:`MEASURES` as columns (NaN where a
    concept has none)."""
    rows = []
    for run in runs:
        for m in run.results.methods:
            e = m.evaluation
            rows.append(
                {
                    "concept": run.name,
                    "method": m.name,
                    "kind": m.kind,
                    "objective": m.objective,
                    "chosen_m": e.chosen_m,
                    "pref_gain": e.pref_gain,
                    "util_drop": e.util_drop,
                    "accuracy": e.accuracy,
                    "accuracy_m0": e.accuracy_m0,
                    "r2_preference": _r2(m, "preference"),
                    "r2_utility": _r2(m, "utility"),
                }
            )
    table = pd.DataFrame(rows, columns=["concept", "method", "kind", "objective", *MEASURES])
    for col in MEASURES:
        table[col] = pd.to_numeric(table[col], errors="coerce").astype(float)
    return table


def mean_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """Mean and two-sided Student-t interval of ``values`` (NaN-free); the interval is NaN
    with fewer than two values."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(sum(values) / n)
    if n < 2:
        return mean, math.nan, math.nan
    sd = float(pd.Series(values).std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def method_table(per_concept: pd.DataFrame, level: float = LEVEL) -> pd.DataFrame:
    """One row per method (in the experiment's order): for each measure its mean over the
    concepts that have it, the standard deviation, the interval at ``level`` and ``n``."""
    rows = []
    for method, group in per_concept.groupby("method", sort=False):
        row: dict[str, Any] = {
            "method": method,
            "kind": group["kind"].iloc[0],
            "objective": group["objective"].iloc[0],
            "concepts": len(group),
        }
        for col in MEASURES:
            values = [float(v) for v in group[col] if not math.isnan(float(v))]
            mean, low, high = mean_interval(values, level)
            row[col] = mean
            row[f"{col}_sd"] = float(pd.Series(values).std(ddof=1)) if len(values) > 1 else math.nan
            row[f"{col}_ci_low"], row[f"{col}_ci_high"] = low, high
            row[f"{col}_n"] = len(values)
        rows.append(row)
    return pd.DataFrame(rows)


def _cell(mean: float, low: float, high: float) -> str:
    if math.isnan(mean):
        return "–"
    if math.isnan(low):
        return f"{mean:.3g}"
    return f"{mean:.3g} [{low:.3g}, {high:.3g}]"


SHOWN = ("chosen_m", "pref_gain", "util_drop", "accuracy", "r2_preference")


def summary_markdown(results: ConceptsResults) -> str:
    """The per-method means (95% intervals over concepts) and the per-concept values."""
    lines = [
        f"# {results.name}: {len(results.concepts)} concepts × "
        f"{len(results.per_method)} methods ({results.model})",
        "",
        f"Means over concepts, with {LEVEL:.0%} Student-t intervals:",
        "",
        "| method | concepts | " + " | ".join(SHOWN) + " |",
        "|---|---|" + "---|" * len(SHOWN),
    ]
    for _, r in results.per_method.iterrows():
        cells = [_cell(r[c], r[f"{c}_ci_low"], r[f"{c}_ci_high"]) for c in SHOWN]
        lines.append(f"| {r['method']} | {r['concepts']} | " + " | ".join(cells) + " |")
    lines += ["", "Per concept:", "", "| concept | method | " + " | ".join(SHOWN) + " |"]
    lines.append("|---|---|" + "---|" * len(SHOWN))
    for _, r in results.per_concept.iterrows():
        cells = ["–" if math.isnan(r[c]) else f"{r[c]:.3g}" for c in SHOWN]
        lines.append(f"| {r['concept']} | {r['method']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Each concept's own report: "
        + ", ".join(f"{c.name}: {c.directory / 'report.html'}" for c in results.concepts),
    ]
    return "\n".join(lines) + "\n"


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for _, r in frame.iterrows():
        cells = []
        for v in r:
            text = (
                f"{v:.4g}"
                if isinstance(v, float) and not math.isnan(v)
                else ("–" if isinstance(v, float) else str(v))
            )
            cells.append(f"<td>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def report_html(results: ConceptsResults) -> str:
    shown = ["method", "concepts"] + [
        f"{c}{suffix}" for c in SHOWN for suffix in ("", "_ci_low", "_ci_high")
    ]
    links = "".join(
        f'<li><a href="{html.escape(str(Path("concepts") / c.name / "report.html"))}">'
        f"{html.escape(c.name)}</a> ({html.escape(c.source)})</li>"
        for c in results.concepts
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(results.name)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style></head><body>"
        f"<h1>{html.escape(results.name)}: {len(results.concepts)} concepts</h1>"
        f"<p>Model {html.escape(results.model)}. Means over concepts with {LEVEL:.0%} "
        "Student-t intervals; every number is in results.json, the tables in "
        "methods.parquet and concepts.parquet.</p>"
        f"<h2>Per method</h2>{_html_table(results.per_method[shown])}"
        f"<h2>Per concept</h2>{_html_table(results.per_concept)}"
        f"<h2>Concepts</h2><ul>{links}</ul></body></html>\n"
    )


def write_concepts_report(results: ConceptsResults, out: Path) -> None:
    """The top folder's tables and report (each file written atomically)."""
    write_parquet_atomic(out / "concepts.parquet", results.per_concept)
    write_parquet_atomic(out / "methods.parquet", results.per_method)
    write_text_atomic(out / "summary.md", summary_markdown(results))
    write_text_atomic(out / "report.html", report_html(results))
    write_json_atomic(out / "results.json", results.to_dict())
