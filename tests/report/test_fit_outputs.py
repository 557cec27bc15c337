"""``fit_command``: parquet in, fits.json and PNG plots out, errors that name the file; and its
two steps on in-memory tables (``fit_tables``, ``write_fit_outputs``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from unisteer.fit import FitError
from unisteer.fit.synthetic import EXAMPLE_PREFERENCE, EXAMPLE_UTILITY, synthetic_table
from unisteer.report.fit_outputs import fit_command, fit_tables, write_fit_outputs

M = np.linspace(-30, 30, 21)
PNG = b"\x89PNG\r\n\x1a\n"


def _write(path: Path, seed: int, **shift: float) -> Path:
    pref = {**EXAMPLE_PREFERENCE, **{k: v for k, v in shift.items() if k != "util_b"}}
    util = {**EXAMPLE_UTILITY, "b": shift.get("util_b", EXAMPLE_UTILITY["b"])}
    synthetic_table(M, pref, util, n_pairs=4, noise=0.1, seed=seed).to_parquet(path)
    return path


def test_fit_command_with_a_test_sweep(tmp_path: Path) -> None:
    train = _write(tmp_path / "train.parquet", 0)
    test = _write(tmp_path / "test.parquet", 1, alpha=0.6, b=0.5, util_b=-2.0)
    out = tmp_path / "out"
    result = fit_command(train, test, out, max_util_drop=1.0)
    assert json.loads((out / "fits.json").read_text()) == result
    for name in ("fit.png", "fit_test.png", "frontier.png"):
        assert (out / name).read_bytes().startswith(PNG)
    assert sorted(p.name for p in out.iterdir()) == [
        "fit.png", "fit_test.png", "fits.json", "frontier.png",
    ]  # fmt: skip
    for kind in ("preference", "utility"):
        r2 = result["r2"][kind]
        assert set(r2) == {"train", "test", "train_to_test"}
        assert r2["train"] > 0.99 and r2["test"] > 0.99 and r2["train_to_test"] < r2["test"]
        fit = result["train"]["fits"][kind]
        assert fit["converged"] is True and fit["constraint_violation"] < 1e-6
        assert set(fit["params"]) >= {"m_pos", "L_pos", "p_pos", "m_neg", "L_neg", "p_neg"}
    choice = result["choice"]
    assert choice["util_drop"] <= 1.0 + 1e-9 and choice["pref_gain"] > 0
    assert set(result["choice_on_test"]) == {"m", "pref_gain", "util_drop"}
    assert result["train"]["regions"]["positive"]["linear_end"] > 0
    assert result["train"]["linear_slope"]["alpha_d0"] > 0


def test_fit_command_per_pair_without_a_test_sweep(tmp_path: Path) -> None:
    table = synthetic_table(M, EXAMPLE_PREFERENCE, EXAMPLE_UTILITY, n_pairs=2, noise=0.05, seed=4)
    table.to_parquet(tmp_path / "sweep.parquet")
    # a directory holding sweep.parquet works as well as the file itself
    result = fit_command(
        tmp_path, None, tmp_path / "out", per_pair=True, max_util_drop=2.0, n_starts=8, bootstrap=3
    )
    assert set(result["r2"]["preference"]) == {"train"}
    assert "test" not in result and result["max_util_drop"] == 2.0
    pairs = result["per_pair"]["train"]["preference"]
    assert pairs["n_pairs"] == 2 and pairs["n_converged"] == 2 and not pairs["errors"]
    assert not (tmp_path / "out" / "fit_test.png").exists()
    fit = result["train"]["fits"]["preference"]
    assert fit["n_starts"] == 8 and fit["n_bootstrap"] == 3 and set(fit["ci"]) == set(fit["params"])


def test_bad_paths_and_files_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.parquet"
    with pytest.raises(FitError, match=r"nope\.parquet: no such file"):
        fit_command(missing, None, tmp_path / "out")
    garbage = tmp_path / "garbage.parquet"
    garbage.write_text("not parquet")
    with pytest.raises(FitError, match=r"garbage\.parquet: cannot be read"):
        fit_command(garbage, None, tmp_path / "out")
    means = tmp_path / "means.parquet"
    synthetic_table(M, EXAMPLE_PREFERENCE, EXAMPLE_UTILITY, n_pairs=1).drop(
        columns="pair_id"
    ).to_parquet(means)
    with pytest.raises(FitError, match=r"means\.parquet: not a sweep table"):
        fit_command(means, None, tmp_path / "out")
    good = _write(tmp_path / "good.parquet", 0)
    with pytest.raises(FitError, match=r"missing\.parquet"):
        fit_command(good, tmp_path / "missing.parquet", tmp_path / "out")
    flat = tmp_path / "flat.parquet"
    table = synthetic_table(M, EXAMPLE_PREFERENCE, EXAMPLE_UTILITY, n_pairs=2)
    table["pref_odds"] = 0.0
    table.to_parquet(flat)
    with pytest.raises(FitError, match=r"flat\.parquet: .*flat"):
        fit_command(flat, None, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_fit_tables_keeps_the_fits_and_writes_what_fit_command_writes(tmp_path: Path) -> None:
    train = _write(tmp_path / "train.parquet", 0)
    test = _write(tmp_path / "test.parquet", 1, alpha=0.6, b=0.5, util_b=-2.0)
    from_files = fit_command(train, test, tmp_path / "a", max_util_drop=1.0, n_starts=8)
    fitted = fit_tables(
        pd.read_parquet(train),
        pd.read_parquet(test),
        train_source=train,
        test_source=test,
        max_util_drop=1.0,
        n_starts=8,
    )
    assert fitted.test is not None and fitted.generalization is not None
    assert fitted.generalization.train is fitted.train and fitted.generalization.test is fitted.test
    written = write_fit_outputs(fitted, tmp_path / "b")
    assert json.loads((tmp_path / "b" / "fits.json").read_text()) == written
    same = {k: v for k, v in written.items() if k != "plots"}
    assert same == {k: v for k, v in from_files.items() if k != "plots"}
    assert written["choice"] == fitted.choice.to_dict()
    assert written["train"]["fits"] == fitted.train.to_dict()
    on_test = fitted.choice_on_test()
    assert on_test is not None and on_test.m == fitted.choice.m
    assert written["choice_on_test"] == {
        "m": on_test.m, "pref_gain": on_test.pref_gain, "util_drop": on_test.util_drop
    }  # fmt: skip
    assert on_test.pref == float(fitted.test.preference.predict(fitted.choice.m))
    # the same bytes as fit_command wrote, but for the plot paths
    a = (tmp_path / "a" / "fits.json").read_text().replace(str(tmp_path / "a"), "OUT")
    b = (tmp_path / "b" / "fits.json").read_text().replace(str(tmp_path / "b"), "OUT")
    assert a == b
    # an experiment's methods leave out their own frontier (the report draws one of all)
    lean = write_fit_outputs(fitted, tmp_path / "c", with_frontier=False)
    assert set(lean["plots"]) == {"fit", "fit_test"} and set(written["plots"]) > set(lean["plots"])
    assert not (tmp_path / "c" / "frontier.png").exists()


def test_fit_tables_names_its_tables_in_errors_and_writes_nothing() -> None:
    table = synthetic_table(M, EXAMPLE_PREFERENCE, EXAMPLE_UTILITY, n_pairs=2)
    table["pref_odds"] = 0.0
    with pytest.raises(FitError, match=r"^my sweep: .*flat"):
        fit_tables(table, train_source="my sweep")
    assert (
        fit_tables(synthetic_table(M, EXAMPLE_PREFERENCE, EXAMPLE_UTILITY, n_pairs=2)).test is None
    )
