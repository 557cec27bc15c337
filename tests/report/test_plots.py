"""Plots: valid, non-empty PNG files written atomically, for converged and unconverged fits."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from matplotlib.image import imread

from unisteer.fit import CurveFit, SweepFit, choose_multiplier
from unisteer.fit.synthetic import EXAMPLE_PREFERENCE, EXAMPLE_UTILITY, synthetic_table
from unisteer.report.plots import plot_frontier, plot_sweep_fit

M = np.linspace(-30, 30, 21)


def _fit(pref: dict[str, float], util: dict[str, float]) -> SweepFit:
    return SweepFit(
        CurveFit.from_params("preference", pref, M), CurveFit.from_params("utility", util, M)
    )


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert float(np.std(image)) > 0.01  # not a blank canvas
    leftovers = [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers


def test_sweep_fit_plot_with_data_and_choice(tmp_path: Path) -> None:
    table = synthetic_table(M, EXAMPLE_PREFERENCE, EXAMPLE_UTILITY, n_pairs=4, noise=0.2, seed=0)
    fit = _fit(EXAMPLE_PREFERENCE, EXAMPLE_UTILITY)
    choice = choose_multiplier(fit, 1.0)
    out = plot_sweep_fit(table, fit, tmp_path / "sub" / "fit.png", choice=choice, title="t")
    assert out == tmp_path / "sub" / "fit.png"
    _assert_png(out)
    # without data the fit's own points are drawn; choice and regions are computed
    _assert_png(plot_sweep_fit(None, fit, tmp_path / "fit2.png"))


def test_sweep_fit_plot_of_an_unconverged_fit(tmp_path: Path) -> None:
    broken = {**EXAMPLE_PREFERENCE, "m_neg": 5.0}  # discontinuous at 0: not converged
    fit = _fit(broken, EXAMPLE_UTILITY)
    assert not fit.converged
    _assert_png(plot_sweep_fit(None, fit, tmp_path / "broken.png"))


@pytest.mark.parametrize("x", ["drop", "util"])
def test_frontier_of_several_methods(tmp_path: Path, x: Literal["drop", "util"]) -> None:
    a = _fit(EXAMPLE_PREFERENCE, EXAMPLE_UTILITY)
    b = _fit({**EXAMPLE_PREFERENCE, "alpha": 0.4}, {**EXAMPLE_UTILITY, "L_pos": 200.0,
             "m_neg": 0.0, "m_pos": 0.0, "L_neg": 200.0, "p_neg": 0.8})  # fmt: skip
    c = _fit({**EXAMPLE_PREFERENCE, "alpha": -0.8}, EXAMPLE_UTILITY)
    fits = {"vector": a, "lora": b, "local_weight": c}
    path = plot_frontier(
        fits,
        tmp_path / f"frontier_{x}.png",
        choices={"vector": choose_multiplier(a)},
        x=x,  # type: ignore[arg-type]
    )
    _assert_png(path)
    with pytest.raises(ValueError):
        plot_frontier({}, tmp_path / "empty.png")
