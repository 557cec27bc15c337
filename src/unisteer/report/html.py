"""The experiment report: ``report.html`` (self-contained, PNGs embedded), ``summary.md`` and
the frontier of all methods (``frontier.png``), from the results of
:func:`unisteer.experiment.run_experiment` (:class:`~unisteer.report.results.ExperimentResults`;
the frontier is drawn from the in-memory train fits, with the m chosen on each)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from unisteer.files import write_text_atomic
from unisteer.fit import MultiplierChoice, SweepFit
from unisteer.fit.margin import POINT_LEVEL
from unisteer.report.layers import LAYER_COLUMNS, layer_rows, write_layer_table
from unisteer.report.layers import finite as _number
from unisteer.report.layers import interval as _interval
from unisteer.report.plots import plot_frontier, plot_layers
from unisteer.report.results import (
    ExperimentResults,
    ExperimentSettings,
    FitOutcome,
    MethodResult,
)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.3g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v, digits) for v in value) + "]"
    return str(value)


def method_row(m: MethodResult) -> dict[str, Any]:
    """The numbers of one method's row in the report table (non-finite numbers as ``None``)."""
    fit = m.fit
    row: dict[str, Any] = {"method": m.name, "kind": m.kind, "objective": m.objective}
    if fit.ok:
        r2 = fit.r2()
        for curve in ("preference", "utility"):
            for split in ("train", "test", "train_to_test"):
                row[f"{curve}_r2_{split}"] = r2.get(curve, {}).get(split)
        if fit.choice is not None:
            row.update(
                chosen_m=_number(fit.choice.m),
                fit_pref_gain=_number(fit.choice.pref_gain),
                fit_util_drop=_number(fit.choice.util_drop),
                fit_util_drop_bound=_number(fit.choice.util_drop_bound),
            )
        row["unresolved"] = _unresolved(fit)
    else:
        row["fit_error"] = fit.error
    ev = m.evaluation
    row.update(
        test_pref_gain=_number(ev.pref_gain),
        test_pref_gain_ci=_interval(ev.pref_gain_ci),
        test_util_drop=_number(ev.util_drop),
        test_util_drop_ci=_interval(ev.util_drop_ci),
        accuracy_m0=_number(ev.accuracy_m0),
        accuracy=_number(ev.accuracy),
    )
    return row


def choice_rule(exp: ExperimentSettings) -> str:
    """How the experiment chose m, in one sentence (the report's header, Markdown and HTML)."""
    rule = (
        f"Chosen m: the largest fitted PrefOdds (train fit) with a fitted UtilOdds drop of at "
        f"most {exp.max_util_drop:g} nat"
    )
    if exp.budget_level > POINT_LEVEL:
        rule += (
            f", kept with {exp.budget_level:.0%} one-sided confidence over pairs: the fitted "
            "drop plus t·SE of the measured per-pair drops (column 'drop bound') stays within "
            "the budget (unisteer.fit.margin)"
        )
    return rule + "."


def _unresolved(fit: FitOutcome) -> str:
    """The fitted curves whose decay ended at the grid's resolution (see ``fit/solve.py``):
    the data pull them narrower than the grid spacing, so more points are needed there."""
    names = []
    for split, sweep_fit in (("train", fit.train), ("test", fit.test)):
        if sweep_fit is None:
            continue
        for curve in ("preference", "utility"):
            if getattr(sweep_fit, curve).unresolved:
                names.append(f"{split} {curve[:4]}")
    return ", ".join(names) if names else "none"


_COLUMNS = [
    ("method", "method"),
    ("preference_r2_train", "Pref R² train"),
    ("preference_r2_test", "Pref R² test"),
    ("preference_r2_train_to_test", "Pref R² train→test"),
    ("utility_r2_train", "Util R² train"),
    ("utility_r2_test", "Util R² test"),
    ("utility_r2_train_to_test", "Util R² train→test"),
    ("chosen_m", "chosen m"),
    ("fit_pref_gain", "PrefOdds gain (fit)"),
    ("fit_util_drop", "UtilOdds drop (fit)"),
    ("fit_util_drop_bound", "drop bound kept ≤ budget"),
    ("test_pref_gain", "PrefOdds gain (test)"),
    ("test_pref_gain_ci", "95% CI"),
    ("test_util_drop", "UtilOdds drop (test)"),
    ("test_util_drop_ci", "95% CI"),
    ("accuracy_m0", "accuracy m=0"),
    ("accuracy", "accuracy at m"),
    ("unresolved", "fits at grid resolution"),
]


def _train_fits(
    results: ExperimentResults,
) -> tuple[dict[str, SweepFit], dict[str, MultiplierChoice]]:
    """Each method's train fit and its chosen m, for the frontier (failed fits left out)."""
    fits: dict[str, SweepFit] = {}
    choices: dict[str, MultiplierChoice] = {}
    for m in results.methods:
        if m.fit.ok and m.fit.train is not None:
            fits[m.name] = m.fit.train
            if m.fit.choice is not None:
                choices[m.name] = m.fit.choice
    return fits, choices


# each method's two fit plots (written by :func:`unisteer.report.fit_outputs.write_fit_outputs`)
_FIGURES = (
    ("fit.png", "train sweep and fits; the m marked is chosen on the train fit"),
    ("fit_test.png", "test sweep and fits; the m marked is the one chosen on the train fit"),
)


def _img(path: Path, alt: str) -> str:
    if not path.is_file():
        return f"<p class='missing'>({html.escape(alt)}: no plot)</p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def _skipped_lines(skipped: tuple[str, ...], show: int = 5) -> list[str]:
    """What lenient reading left out, for the report's header (every one is in
    ``results.json``)."""
    if not skipped:
        return []
    more = f"; {len(skipped) - show} more in results.json" if len(skipped) > show else ""
    return [f"Skipped {len(skipped)} rows: " + "; ".join(skipped[:show]) + more + ".", ""]


TRANSFER_COLUMNS = [
    ("method", "method"),
    ("chosen_m", "chosen m"),
    ("test_pref_gain", "PrefOdds gain (test)"),
    ("test_pref_gain_ci", "95% CI"),
    ("transfer_pref_gain", "PrefOdds gain (transfer)"),
    ("transfer_pref_gain_ci", "95% CI"),
    ("test_util_drop", "UtilOdds drop (test)"),
    ("transfer_util_drop", "UtilOdds drop (transfer)"),
    ("transfer_util_drop_ci", "95% CI"),
    ("transfer_pref_m0", "PrefOdds m=0 (transfer)"),
    ("transfer_accuracy_m0", "accuracy m=0 (transfer)"),
    ("transfer_accuracy", "accuracy at m (transfer)"),
]


def transfer_rows(results: ExperimentResults) -> list[dict[str, Any]]:
    """Per method with a transfer evaluation: the test pairs' and the transfer pairs' measured
    gains at the same m (chosen on the train fit), side by side."""
    rows = []
    for m in results.methods:
        if m.transfer is None:
            continue
        ev, tr = m.evaluation, m.transfer
        rows.append(
            {
                "method": m.name,
                "chosen_m": _number(tr.chosen_m) if tr.chosen_m is not None else None,
                "test_pref_gain": _number(ev.pref_gain),
                "test_pref_gain_ci": _interval(ev.pref_gain_ci),
                "transfer_pref_gain": _number(tr.pref_gain),
                "transfer_pref_gain_ci": _interval(tr.pref_gain_ci),
                "test_util_drop": _number(ev.util_drop),
                "transfer_util_drop": _number(tr.util_drop),
                "transfer_util_drop_ci": _interval(tr.util_drop_ci),
                "transfer_pref_m0": _number(tr.pref_m0),
                "transfer_accuracy_m0": _number(tr.accuracy_m0),
                "transfer_accuracy": _number(tr.accuracy),
            }
        )
    return rows


def _layers_text(results: ExperimentResults) -> str:
    layers = sorted({m.layer for m in results.methods if m.layer is not None})
    layers = layers or [results.experiment.layer]
    if len(layers) == 1:
        return f"layer {layers[0]}"
    return f"{len(layers)} blocks ({', '.join(str(x) for x in layers)})"


def summary_markdown(results: ExperimentResults) -> str:
    """``summary.md``: the methods table in Markdown."""
    exp = results.experiment
    data = results.data
    rows = [method_row(m) for m in results.methods]
    lines = [
        f"# unisteer experiment `{exp.name}`",
        "",
        f"Model `{exp.model}`, {_layers_text(results)}; data `{exp.data}` "
        f"({data.n_train} training pairs; sweeps of {exp.sweep_points} "
        f"multipliers on {data.n_sweep_train} train and "
        f"{data.n_test} test pairs). {choice_rule(results.experiment)} "
        '"test" columns are measured on the test pairs at that m (95% bootstrap intervals '
        "over test pairs); both plots of a method mark the m chosen on the train fit.",
        "",
        *_skipped_lines(data.skipped),
        "| " + " | ".join(title for _, title in _COLUMNS) + " |",
        "|" + "---|" * len(_COLUMNS),
    ]
    for row in rows:
        cells = [_fmt(row.get(key)) for key, _ in _COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    # Notes go below the table: a line between rows would end it in Markdown.
    failed = [f"`{r['method']}`: fit failed: {r['fit_error']}" for r in rows if r.get("fit_error")]
    if failed:
        lines += ["", *failed]
    moved = transfer_rows(results)
    if moved:
        lines += [
            "",
            f"## Transfer to `{exp.transfer}`",
            "",
            "The m chosen on the train fit, measured on the test pairs and on the transfer "
            "pairs (95% bootstrap intervals over pairs).",
            "",
            "| " + " | ".join(title for _, title in TRANSFER_COLUMNS) + " |",
            "|" + "---|" * len(TRANSFER_COLUMNS),
            *("| " + " | ".join(_fmt(r.get(k)) for k, _ in TRANSFER_COLUMNS) + " |" for r in moved),
        ]
    by_layer = layer_rows(results)
    if by_layer:
        lines += [
            "",
            "## Which layer",
            "",
            "The best preference gain within the budget at each block (train fit), and the gain "
            "measured on the test pairs at that m; the chosen block has the largest fitted gain.",
            "",
            "| " + " | ".join(title for _, title in LAYER_COLUMNS) + " |",
            "|" + "---|" * len(LAYER_COLUMNS),
            *("| " + " | ".join(_fmt(r.get(k)) for k, _ in LAYER_COLUMNS) + " |" for r in by_layer),
        ]
    lines += [
        "",
        f"Wall time {results.wall_seconds:.0f} s, peak memory {results.peak_memory_mb:.0f} MiB.",
        "",
    ]
    return "\n".join(lines)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; font-size: 13px; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
img { max-width: 100%; border: 1px solid #eee; }
.pair { display: flex; gap: 1em; flex-wrap: wrap; }
.pair figure { flex: 1 1 45%; margin: 0; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 12px; }
.error { color: #b00; }
.trace { white-space: pre-wrap; font-family: monospace; font-size: 12px; }
td.text { text-align: left; vertical-align: top; max-width: 24em; white-space: pre-wrap; }
"""


def _samples_table(m: MethodResult) -> list[str]:
    """Greedy text on test prompts, one row per prompt and one column per multiplier
    (unsteered, the chosen m, twice it), so a reader sees where utility goes."""
    if not m.samples:
        return []
    ms = sorted({x.m for x in m.samples}, key=abs)
    names = {0.0: "unsteered (m = 0)"}
    if len(ms) == 3:
        names[ms[1]] = f"chosen m = {_fmt(ms[1])}"
        names[ms[2]] = f"2 × chosen m = {_fmt(ms[2])}"
    head = "".join(f"<th>{html.escape(names.get(x, f'm = {_fmt(x)}'))}</th>" for x in ms)
    rows = []
    for prompt in dict.fromkeys(x.prompt for x in m.samples):
        texts = {x.m: x.text for x in m.samples if x.prompt == prompt}
        cells = "".join(f"<td class='text'>{html.escape(texts.get(x, ''))}</td>" for x in ms)
        rows.append(f"<tr><td class='text'>{html.escape(prompt)}</td>{cells}</tr>")
    return [
        "<h3>Generations on test prompts (greedy)</h3>",
        f"<table class='samples'><thead><tr><th>prompt</th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>",
    ]


def _control_section(m: MethodResult) -> list[str]:
    """The ``[control]`` controller of a method: per kappa the mean m_t and the measured gains,
    the frontier beside the fixed sweep's, and one generation token by token with its m_t."""
    c = m.control
    if c is None:
        return []
    spec = ", ".join(f"{k} = {v}" for k, v in c.controller.items() if k != "name")
    keys = ["kappa", "mean_m", "pref_gain", "util_drop", "n"]
    rows = [{k: getattr(r, k) for k in keys} for r in c.means.itertuples(index=False)]
    columns = [("kappa", "κ (nats)"), ("mean_m", "mean m_t"), ("pref_gain", "PrefOdds gain"),
               ("util_drop", "UtilOdds drop"), ("n", "test pairs")]  # fmt: skip
    parts = [
        f"<h3>Adaptive multiplier: {html.escape(str(c.controller.get('name')))}</h3>",
        f"<p>{html.escape(spec)}. Teacher-forced on the test pairs, m_t chosen at every "
        "completion token; gains against m = 0 scored the same way.</p>",
        _html_table(f"control-{html.escape(m.name)}", columns, rows),
        _img(m.directory / "control" / "control.png", f"{m.name} controller and m_t trace"),
    ]
    t = c.trace
    if t is not None:
        top = max((abs(x) for x in t.m), default=0.0) or 1.0
        spans = "".join(
            f"<span title='m = {mt:.3g}, KL = {kl:.3g}' style='background: rgba(214, 39, 40, "
            f"{0.12 + 0.6 * abs(mt) / top:.2f})'>{html.escape(tok)}</span>"
            for tok, mt, kl in zip(t.tokens, t.m, t.kl, strict=True)
        )
        parts += [
            f"<p>Prompt: <code>{html.escape(t.prompt)}</code> at κ = {_fmt(t.kappa)} (greedy; "
            "each token shaded by its m_t, hover for the value):</p>",
            f"<p class='trace'>{spans}</p>",
        ]
    return parts


def _html_table(table_id: str, columns: list[tuple[str, str]], rows: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(k)))}</td>" for k, _ in columns) + "</tr>"
        for r in rows
    )
    return f"<table id='{table_id}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def report_html(results: ExperimentResults, out: Path) -> str:
    """``report.html``: the methods table, the frontier, each method's train and test fits
    (PNGs from ``out`` embedded), configuration, versions and timings."""
    exp = results.experiment
    data = results.data
    rows = [method_row(m) for m in results.methods]
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in _COLUMNS)
    body = []
    for row in rows:
        cells = "".join(f"<td>{html.escape(_fmt(row.get(k)))}</td>" for k, _ in _COLUMNS)
        body.append(f"<tr data-method='{html.escape(row['method'])}'>{cells}</tr>")
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>unisteer: {html.escape(exp.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>unisteer experiment <code>{html.escape(exp.name)}</code></h1>",
        f"<p>Model <code>{html.escape(exp.model)}</code>, {_layers_text(results)}; data "
        f"<code>{html.escape(str(exp.data))}</code>: {data.n_train} training "
        f"pairs, sweeps of {exp.sweep_points} multipliers on "
        f"{data.n_sweep_train} train and {data.n_test} test pairs. "
        f"{html.escape(choice_rule(exp))} The test columns are measured on the test "
        "pairs at that m, each with a 95% bootstrap interval over the test pairs. Both plots of "
        "a method mark the m chosen on the train fit. A fit listed under 'fits at grid "
        "resolution' wanted a feature narrower than the grid spacing (bounded there). "
        "Accuracy: the fraction of test pairs with P(A_p) &gt; P(A_n).</p>",
        *(f"<p class='skipped'>{html.escape(x)}</p>" for x in _skipped_lines(data.skipped) if x),
        "<h2>Methods</h2>",
        f"<table id='methods'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>",
        "<h2>Preference–utility frontier</h2>",
        _img(out / "frontier.png", "frontier of all methods"),
    ]
    moved = transfer_rows(results)
    if moved:
        parts += [
            f"<h2>Transfer to <code>{html.escape(str(exp.transfer))}</code></h2>",
            "<p>The m chosen on the train fit, measured on the test pairs and on the transfer "
            "pairs, each with a 95% bootstrap interval over its pairs.</p>",
            _html_table("transfer", TRANSFER_COLUMNS, moved),
        ]
    by_layer = layer_rows(results)
    if by_layer:
        parts += [
            "<h2>Which layer</h2>",
            "<p>Per block: the m chosen on the train fit, the fitted preference gain there "
            "(within the utility budget) and the gain measured on the test pairs at that m, "
            "with its 95% bootstrap interval. The chosen block has the largest fitted gain; "
            "every number is in <code>layers.json</code>.</p>",
            _img(out / "layers.png", "preference gain within the budget per block"),
            _html_table("layers", LAYER_COLUMNS, by_layer),
        ]
    for m in results.methods:
        parts.append(f"<h2 id='{html.escape(m.name)}'>{html.escape(m.name)}</h2>")
        tr = m.training
        how = (
            "closed form (mean activation difference)"
            if m.objective == "diffmean"
            else f"training loss {_fmt(tr.first_loss, 4)} → "
            f"{_fmt(tr.final_loss, 4)} over {_fmt(tr.steps)} steps"
        )
        parts.append(
            f"<p>{html.escape(m.kind)} at <code>{html.escape(m.site)}</code>, "
            f"{m.n_parameters} parameters, objective {html.escape(m.objective)}: "
            f"{how}; sweep grid {_fmt(min(m.grid))} … {_fmt(max(m.grid))} "
            f"({len(m.grid)} points); {m.seconds:.0f} s.</p>"
        )
        if not m.fit.ok:
            parts.append(f"<p class='error'>Fit failed: {html.escape(str(m.fit.error))}</p>")
        parts.append("<div class='pair'>")
        for name, caption in _FIGURES:
            alt = f"{m.name} {caption.split()[0]}"
            parts.append(
                f"<figure>{_img(m.directory / 'fit' / name, alt)}"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        parts.append("</div>")
        parts += _samples_table(m)
        parts += _control_section(m)
    saved = results.to_dict()
    config = {k: saved[k] for k in ("experiment", "data", "model", "versions", "timings")}
    config["peak_memory_mb"] = saved["peak_memory_mb"]
    parts += [
        "<h2>Configuration, versions and timings</h2>",
        f"<pre>{html.escape(json.dumps(config, indent=1, default=str))}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(results: ExperimentResults, out: str | Path) -> dict[str, Path]:
    """Write ``frontier.png``, ``report.html`` and ``summary.md`` into ``out``."""
    out_dir = Path(out)
    paths: dict[str, Path] = {}
    fits, choices = _train_fits(results)
    if fits:
        paths["frontier"] = plot_frontier(
            fits,
            out_dir / "frontier.png",
            choices=choices,
            max_util_drop=results.experiment.max_util_drop,
        )
    by_layer = layer_rows(results)
    if by_layer:
        paths["layers"] = write_layer_table(by_layer, out_dir)
        paths["layers_plot"] = plot_layers(
            by_layer, out_dir / "layers.png", max_util_drop=results.experiment.max_util_drop
        )
    write_text_atomic(out_dir / "report.html", report_html(results, out_dir))
    write_text_atomic(out_dir / "summary.md", summary_markdown(results))
    paths["html"] = out_dir / "report.html"
    paths["summary"] = out_dir / "summary.md"
    return paths
