"""PNG plots of sweeps and their fits (matplotlib, Agg canvas, no pyplot global state).

* :func:`plot_sweep_fit` — PrefOdds and UtilOdds against m in two panels: the data means
  (± standard error when known), the fitted curves, the linear / transitional / convergence
  regions of preference shaded, the utility budget line, and the chosen m marked.
* :func:`plot_layers` — per method family, the preference gain within the budget at each
  block: fitted (train) as a line, measured on the test pairs with its interval as error bars.
* :func:`plot_frontier` — the preference–utility frontier of several methods on one figure:
  x is the fitted UtilOdds drop from m = 0 (or UtilOdds itself), y the fitted PrefOdds gain,
  one line per method traced along its swept m, the chosen m marked.
* :func:`plot_control` — a controller's measured frontier beside the fixed-m sweep's, and the
  ``m_t`` trace of one generation.

Every function writes its PNG atomically (:mod:`unisteer.files`) and returns the path.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from unisteer.files import write_bytes_atomic
from unisteer.fit.curves import Array, Kind
from unisteer.fit.derive import MultiplierChoice, Regions, choose_multiplier
from unisteer.fit.derive import regions as find_regions
from unisteer.fit.result import CurveFit, SweepFit

if TYPE_CHECKING:
    from unisteer.report.results import ControlResult

_REGION_COLOURS = {"linear": "#2ca02c", "transitional": "#ff7f0e", "convergence": "#d62728"}
_LABELS: dict[Kind, str] = {"preference": "PrefOdds", "utility": "UtilOdds"}
_COLUMNS: dict[Kind, str] = {"preference": "pref_odds", "utility": "util_odds"}


def _save(fig: Figure, path: str | Path) -> Path:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    out = Path(path)
    write_bytes_atomic(out, buf.getvalue())
    return out


def _means(data: pd.DataFrame | None, fit: CurveFit) -> tuple[Array, Array, Array | None]:
    """Per-m means and standard errors of ``data`` for ``fit.kind``, or the fit's own points.

    ``data`` may be a tidy sweep table (``pair_id`` present: averaged here; utility uses
    in-domain rows only) or a per-m means table with optional ``<column>_sem``.
    """
    if data is None:
        return np.asarray(fit.m), np.asarray(fit.y), fit.sem
    col = _COLUMNS[fit.kind]
    rows = data
    if fit.kind == "utility" and "util_in_domain" in rows.columns:
        rows = rows[rows["util_in_domain"].astype(bool)]
    rows = rows[np.isfinite(rows[col].astype(float)) & np.isfinite(rows["m"].astype(float))]
    if "pair_id" in data.columns:
        g = rows.groupby("m", sort=True)[col]
        count = g.count().to_numpy(dtype=np.float64)
        std = g.std(ddof=1).to_numpy(dtype=np.float64)
        sem = np.where(count > 1, std / np.sqrt(np.maximum(count, 1)), np.nan)
        return g.mean().index.to_numpy(np.float64), g.mean().to_numpy(np.float64), sem
    rows = rows.sort_values("m")
    sem_col = f"{col}_sem"
    sem_out = rows[sem_col].to_numpy(np.float64) if sem_col in rows.columns else None
    return rows["m"].to_numpy(np.float64), rows[col].to_numpy(np.float64), sem_out


def _panel(ax: Axes, data: pd.DataFrame | None, fit: CurveFit, dense: Array) -> None:
    m, y, sem = _means(data, fit)
    yerr = None if sem is None else np.where(np.isfinite(sem), sem, 0.0)
    ax.errorbar(m, y, yerr=yerr, fmt="o", ms=4, color="black", capsize=2, label="data (mean)")
    style = "-" if fit.converged else "--"
    note = f"fit, R² = {fit.r2:.3f}" if fit.converged else "fit (NOT converged)"
    ax.plot(dense, fit.predict(dense), style, color="#1f77b4", lw=2, label=note)
    ax.set_ylabel(_LABELS[fit.kind])
    ax.axvline(0.0, color="grey", lw=0.6)
    ax.grid(alpha=0.3)


def _shade(ax: Axes, reg: Regions, lo: float, hi: float) -> None:
    for side, edge in ((reg.positive, hi), (reg.negative, lo)):
        spans = {
            "linear": (0.0, side.linear_end),
            "transitional": (side.linear_end, side.convergence_start),
            "convergence": (side.convergence_start, edge),
        }
        for name, (a, b) in spans.items():
            a_c, b_c = sorted((float(np.clip(a, lo, hi)), float(np.clip(b, lo, hi))))
            if b_c > a_c:
                label = name if side.side == "positive" else None
                ax.axvspan(a_c, b_c, color=_REGION_COLOURS[name], alpha=0.1, lw=0, label=label)


def plot_sweep_fit(
    data: pd.DataFrame | None,
    fit: SweepFit,
    path: str | Path,
    *,
    choice: MultiplierChoice | None = None,
    regions: Regions | None = None,
    max_util_drop: float = 1.0,
    title: str | None = None,
    choice_label: str = "chosen m",
) -> Path:
    """Two panels (PrefOdds, UtilOdds against m) with data, fits, regions and the chosen m.

    ``data`` is a sweep table or means table (``None``: the points stored in the fits).
    ``choice`` and ``regions`` are computed from converged fits when not given (with
    ``max_util_drop``); for unconverged fits they are left out and the curve is dashed.
    ``choice_label`` names the marked m in the legend (e.g. when it was chosen on another
    fit, as on the test panel of :func:`unisteer.report.fit_outputs.write_fit_outputs`).
    """
    lo, hi = (
        min(fit.preference.m_range[0], fit.utility.m_range[0]),
        max(fit.preference.m_range[1], fit.utility.m_range[1]),
    )
    dense = np.linspace(lo, hi, 600)
    fig = Figure(figsize=(7.5, 7.0))
    ax_p, ax_u = fig.subplots(2, 1, sharex=True)
    _panel(ax_p, data, fit.preference, dense)
    _panel(ax_u, data, fit.utility, dense)
    if regions is None and fit.preference.converged:
        regions = find_regions(fit.preference)
    if regions is not None:
        _shade(ax_p, regions, lo, hi)
    if choice is None and fit.converged:
        choice = choose_multiplier(fit, max_util_drop)
    if choice is not None:
        budget = choice.util_at_zero - choice.max_util_drop
        ax_u.axhline(
            budget, color="#9467bd", ls=":", lw=1.2, label=f"budget (−{choice.max_util_drop:g})"
        )
        for ax, value in ((ax_p, choice.pref), (ax_u, choice.util)):
            ax.axvline(choice.m, color="#9467bd", ls="--", lw=1)
            ax.plot(
                [choice.m],
                [value],
                marker="*",
                ms=14,
                color="#9467bd",
                ls="none",
                label=f"{choice_label} = {choice.m:.3g}",
            )
    ax_u.set_xlabel("multiplier m")
    ax_p.legend(fontsize=7, loc="best")
    ax_u.legend(fontsize=7, loc="best")
    fig.suptitle(title or "Preference and utility against m")
    fig.tight_layout()
    return _save(fig, path)


def plot_frontier(
    fits: Mapping[str, SweepFit],
    path: str | Path,
    *,
    choices: Mapping[str, MultiplierChoice] | None = None,
    max_util_drop: float = 1.0,
    x: Literal["drop", "util"] = "drop",
    max_drop: float | None = None,
    title: str | None = None,
) -> Path:
    """Preference gain against utility drop (``x="drop"``) or UtilOdds (``x="util"``).

    One line per method, traced along m from 0 towards the side of its chosen m (positive m
    when there is none), with m = 0 as a dot and the chosen m (from ``choices``, else computed
    for converged fits with ``max_util_drop``) as a star. With ``x="drop"`` the budget is
    drawn as a vertical line and the view is cut at ``max_drop`` nats of utility drop
    (default 10 × the budget), where the choices live; lines leaving it are clipped.
    """
    if not fits:
        raise ValueError("plot_frontier needs at least one fit")
    fig = Figure(figsize=(7.0, 5.0))
    ax = fig.subplots()
    colours = [f"C{i % 10}" for i in range(len(fits))]
    limit = max_drop if max_drop is not None else 10.0 * max_util_drop
    shown_x: list[float] = [0.0]
    shown_y: list[float] = [0.0]
    for colour, (name, fit) in zip(colours, fits.items(), strict=True):
        choice = (choices or {}).get(name)
        if choice is None and fit.converged:
            choice = choose_multiplier(fit, max_util_drop)
        lo, hi = fit.m_range
        side_hi = hi if choice is None or choice.m >= 0 else lo
        dense = np.linspace(0.0, side_hi, 800)
        u0 = float(fit.utility.predict(0.0))
        p0 = float(fit.preference.predict(0.0))
        util = fit.utility.predict(dense)
        xs = u0 - util if x == "drop" else util
        ys = fit.preference.predict(dense) - p0
        if x == "drop":
            keep = xs <= limit
            shown_x += list(xs[keep])
            shown_y += list(ys[keep])
        style = "-" if fit.converged else "--"
        suffix = "" if fit.converged else " (NOT converged)"
        ax.plot(xs, ys, style, color=colour, lw=2, label=f"{name}{suffix}")
        ax.plot([0.0 if x == "drop" else u0], [0.0], "o", color=colour, ms=5)
        if choice is not None:
            cx = choice.util_drop if x == "drop" else choice.util
            ax.plot([cx], [choice.pref_gain], "*", color=colour, ms=15, mec="black", mew=0.6)
            ax.annotate(
                f"m = {choice.m:.3g}",
                (cx, choice.pref_gain),
                textcoords="offset points",
                xytext=(6, 6),
                fontsize=8,
                color=colour,
            )
            shown_x.append(cx)
            shown_y.append(choice.pref_gain)
    if x == "drop":
        ax.axvline(max_util_drop, color="grey", ls=":", lw=1, label=f"budget δ = {max_util_drop:g}")
        ax.set_xlabel("UtilOdds drop from m = 0 (nats, fitted)")
        x_lo, x_hi = min(shown_x), max(shown_x)
        y_lo, y_hi = min(shown_y), max(shown_y)
        pad_x, pad_y = 0.05 * (x_hi - x_lo or 1.0), 0.08 * (y_hi - y_lo or 1.0)
        ax.set_xlim(x_lo - pad_x, min(limit, x_hi) + pad_x)
        ax.set_ylim(y_lo - pad_y, y_hi + pad_y)
    else:
        ax.set_xlabel("UtilOdds (fitted)")
    ax.set_ylabel("PrefOdds gain over m = 0 (fitted)")
    ax.axhline(0.0, color="grey", lw=0.6)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or "Preference–utility frontier (● m = 0, ★ chosen m)")
    fig.tight_layout()
    return _save(fig, path)


def plot_layers(
    rows: list[dict[str, Any]], path: str | Path, *, max_util_drop: float = 1.0
) -> Path:
    """The rows of :func:`unisteer.report.layers.layer_rows` against the block, two panels:
    the PrefOdds gain at the m chosen on the train fit (fitted: a line; measured on the test
    pairs with its 95% interval: error bars; the chosen block circled), and the UtilOdds drop
    measured on the test pairs there, against the budget."""
    if not rows:
        raise ValueError("plot_layers needs at least one row")
    fig = Figure(figsize=(7.0, 7.0))
    ax, ax_u = fig.subplots(2, 1, sharex=True)
    families = list(dict.fromkeys(r["family"] for r in rows))

    def bars(ax: Axes, mine: list[dict[str, Any]], key: str, colour: str, label: str) -> None:
        tested = [r for r in mine if r[key] is not None]
        if not tested:
            return
        x = np.array([r["layer"] for r in tested], dtype=float)
        y = np.array([r[key] for r in tested], dtype=float)
        ci = [r[f"{key}_ci"] or [v, v] for r, v in zip(tested, y, strict=True)]
        lo = np.array([v - (c[0] if c[0] is not None else v) for v, c in zip(y, ci, strict=True)])
        hi = np.array([(c[1] if c[1] is not None else v) - v for v, c in zip(y, ci, strict=True)])
        ax.errorbar(x + 0.15, y, yerr=[lo, hi], fmt="s", color=colour, ms=4, capsize=2,
                    alpha=0.7, label=label)  # fmt: skip

    for i, family in enumerate(families):
        colour = f"C{i % 10}"
        mine = [r for r in rows if r["family"] == family]
        layers = np.array([r["layer"] for r in mine], dtype=float)
        fitted = np.array(
            [np.nan if r["fit_pref_gain"] is None else r["fit_pref_gain"] for r in mine]
        )
        ax.plot(layers, fitted, "-o", color=colour, ms=4, label=f"{family} (fit, train)")
        bars(ax, mine, "test_pref_gain", colour, f"{family} (measured, test, 95% CI)")
        bars(ax_u, mine, "test_util_drop", colour, f"{family} (measured, test, 95% CI)")
        for r in mine:
            if r["chosen_layer"] and r["fit_pref_gain"] is not None:
                ax.plot([r["layer"]], [r["fit_pref_gain"]], "o", ms=12, mfc="none", mec="black")
    ax.axhline(0.0, color="grey", lw=0.6)
    ax.set_ylabel("PrefOdds gain at the chosen m")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(
        f"Which layer: m chosen on the train fit (fitted UtilOdds drop ≤ {max_util_drop:g}); "
        "○ chosen block",
        fontsize=10,
    )
    ax_u.axhline(max_util_drop, color="grey", ls=":", lw=1, label=f"budget δ = {max_util_drop:g}")
    ax_u.axhline(0.0, color="grey", lw=0.6)
    ax_u.set_xlabel("block (layer index)")
    ax_u.set_ylabel("UtilOdds drop at that m (test)")
    ax_u.grid(alpha=0.3)
    ax_u.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return _save(fig, path)


__all__ = ["plot_frontier", "plot_layers", "plot_sweep_fit"]


def plot_control(fixed_means: pd.DataFrame, control: ControlResult, path: str | Path) -> Path:
    """Two panels for a controller (``[control]``): left, the PrefOdds gain against the
    UtilOdds drop from m = 0 of the fixed-m sweep (``fixed_means``: ``m, pref_odds,
    util_odds``, the positive side) and of the controller at each kappa, both measured;
    right, the ``m_t`` of every token of one greedy generation, with its per-token KL."""
    fig = Figure(figsize=(12.0, 4.5))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6]})
    name = str(control.controller.get("name"))
    side = fixed_means[fixed_means["m"] >= 0].sort_values("m")
    zero = side[side["m"] == 0.0]
    if len(side) and len(zero):
        p0, u0 = float(zero["pref_odds"].iloc[0]), float(zero["util_odds"].iloc[0])
        left.plot(u0 - side["util_odds"], side["pref_odds"] - p0, "o-", color="#1f77b4",
                  label="fixed m (test sweep)")  # fmt: skip
    means = control.means.sort_values("util_drop")
    left.plot(means["util_drop"], means["pref_gain"], "^-", color="#d62728", label=name)
    for r in means.itertuples(index=False):
        left.annotate(f"κ = {r.kappa:g}", (r.util_drop, r.pref_gain), textcoords="offset points",
                      xytext=(5, 4), fontsize=7, color="#d62728")  # fmt: skip
    left.set_xlabel("UtilOdds drop from m = 0 (nats, measured)")
    left.set_ylabel("PrefOdds gain over m = 0 (measured)")
    left.axhline(0.0, color="grey", lw=0.6)
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    left.set_title(f"{name} against a fixed m (test pairs)")
    trace = control.trace
    if trace is not None and trace.m:
        steps = np.arange(len(trace.m))
        right.step(steps, trace.m, where="mid", color="#d62728", label="m_t")
        end = control.controller.get("m_max")
        lo = min(0.0, *trace.m, *([end] if isinstance(end, int | float) else []))
        hi = max(0.0, *trace.m, *([end] if isinstance(end, int | float) else []))
        right.set_ylim(lo - 0.05 * (hi - lo or 1.0), hi + 0.05 * (hi - lo or 1.0))
        right.set_xlabel("generated token")
        right.set_ylabel("m_t (0 … m_max)")
        right.grid(alpha=0.3)
        if len(trace.tokens) <= 48:
            right.set_xticks(steps, [t.replace("\n", "⏎") for t in trace.tokens], rotation=90,
                                 fontsize=6)  # fmt: skip
        kl = np.asarray(trace.kl, dtype=float)
        if np.isfinite(kl).any():
            twin = right.twinx()
            twin.plot(steps, kl, ".", color="#7f7f7f", ms=3, label="KL to unsteered")
            twin.set_ylabel("next-token KL (nats)", color="#7f7f7f")
        right.set_title(f"m_t of one greedy generation (κ = {trace.kappa:g})")
    fig.tight_layout()
    return _save(fig, path)
