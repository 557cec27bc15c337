"""The command line end to end on a tiny saved model: train (and resume), sweep, fit and
accuracy, each writing what it says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unisteer.cli import main
from unisteer.data import PairSet

from tiny_models import tiny_model
from tiny_pairs import random_pairs
from tiny_tokenizers import CHATML, word_tokenizer


@pytest.fixture
def saved(tmp_path: Path) -> dict[str, Path]:
    model_dir = tmp_path / "tiny-llama"
    tiny_model("llama").save_pretrained(model_dir)
    word_tokenizer(chat_template=CHATML).save_pretrained(model_dir)
    pairs = random_pairs(12, seed=2)
    data = PairSet(pairs).to_jsonl(tmp_path / "pairs.jsonl")
    return {"model": model_dir, "data": data, "root": tmp_path}


def test_train_sweep_fit_accuracy(
    saved: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = saved["root"] / "delta"
    common = ["--model", str(saved["model"]), "--data", str(saved["data"])]
    args = ["train", *common, "--kind", "lora", "--objective", "split", "--layer", "1"]
    args += ["--out", str(out), "--epochs", "2", "--lr", "0.05", "--multipliers", "0.5,1"]
    assert main(args) == 0
    for name in ("delta.safetensors", "delta.json", "training_log.json"):
        assert (out / name).is_file()
    meta = json.loads((out / "delta.json").read_text())["meta"]
    assert meta["objective"] == "split" and meta["hparams"]["lr"] == 0.05
    assert meta["train_multipliers"] == [0.5, 1.0] and meta["n_val_pairs"] == 1
    log = json.loads((out / "training_log.json").read_text())
    assert len(log["validation"]) == 2 and log["history"]
    # --resume on a finished run trains nothing more and gives the same delta.
    before = (out / "delta.safetensors").read_bytes()
    assert main([*args, "--resume"]) == 0
    assert (out / "delta.safetensors").read_bytes() == before
    capsys.readouterr()

    sweep_dir = saved["root"] / "sweep"
    assert (
        main(["sweep", *common, "--delta", str(out), "--ms", "-3:3:7", "--out", str(sweep_dir)])
        == 0
    )
    assert (sweep_dir / "sweep.parquet").is_file()
    code = main(["fit", str(sweep_dir / "sweep.parquet"), "--out", str(saved["root"] / "fit")])
    # A random tiny model may give curves the model cannot fit: then a clear error, no files.
    captured = capsys.readouterr()
    if code == 0:
        assert (saved["root"] / "fit" / "fits.json").is_file()
    else:
        assert code == 2 and "sweep.parquet" in captured.err

    acc = saved["root"] / "acc"
    assert (
        main(
            [
                "eval",
                "accuracy",
                *common,
                "--deltas",
                str(out),
                "--base",
                "--ms",
                "0,1",
                "--out",
                str(acc),
            ]
        )
        == 0
    )
    assert "delta" in capsys.readouterr().out


def test_train_rejects_bad_arguments(
    saved: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["train", "--model", str(saved["model"]), "--data", str(saved["data"])]
    out = ["--out", str(saved["root"] / "x")]
    assert main([*common, *out, "--multipliers", "2,x"]) == 2
    assert "argument --multipliers" in capsys.readouterr().err
    assert main([*common, *out, "--preset", "nonesuch-gemma-vector-split"]) == 2
    assert "unknown preset" in capsys.readouterr().err
    missing = ["train", "--model", str(saved["model"]), "--data", str(saved["root"] / "no.jsonl")]
    assert main([*missing, *out]) == 2
    assert "no.jsonl" in capsys.readouterr().err


def test_sweep_with_a_kl_budget_controller(
    saved: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import pandas as pd

    from unisteer.core.io import save_delta

    from conftest import make_delta

    delta_dir = saved["root"] / "vec"
    save_delta(make_delta(tiny_model("llama"), "vector", 1), delta_dir)
    common = ["--model", str(saved["model"]), "--data", str(saved["data"]), "--delta",
              str(delta_dir), "--no-progress"]  # fmt: skip
    out = saved["root"] / "kappa"
    args = ["sweep", *common, "--ms", "0:4:5", "--controller", "kl_budget", "--kappas",
            "0,0.05,inf", "--k", "3", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    table = pd.read_parquet(out / "kappa_sweep.parquet")
    assert sorted(table["kappa"].unique()) == [0.0, 0.05, float("inf")]
    means = table.groupby("kappa")["mean_m"].mean()
    assert means[0.0] == 0.0 and means[float("inf")] == 4.0
    assert json.loads((out / "kappa_sweep.json").read_text())["m_max"] == 4.0
    assert "kappa_sweep.parquet" in capsys.readouterr().out
    for bad, says in [
        (["--controller", "kl_budget"], "needs --kappas"),
        (["--controller", "kl_budget", "--kappas", "-1"], "budgets are >= 0"),
        (["--kappas", "0.5"], "go with --controller kl_budget or static_kl"),
        (["--controller", "kl_budget", "--kappas", "1", "--k", "1"], "argument --k: k must be"),
        (["--controller", "kl_budget", "--kappas", "1", "--m-max", "0"], "argument --m-max:"),
    ]:
        code = main(["sweep", *common, *bad, "--out", str(saved["root"] / "bad")])
        assert code == 2 and says in capsys.readouterr().err


def test_eval_under_a_controller(
    saved: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import pandas as pd

    from tiny_axbench import make_concept_dir
    from unisteer.core.io import save_delta
    from unisteer.evaluate.axbench.store import EvalStore

    from conftest import make_delta

    root = saved["root"]
    delta_dir = root / "0"  # the concept it steers toward, by its id
    save_delta(make_delta(tiny_model("llama"), "vector", 1), delta_dir)
    model = ["--model", str(saved["model"]), "--no-progress"]
    acc = ["eval", "accuracy", *model, "--data", str(saved["data"]), "--deltas", str(delta_dir)]
    ctl = ["--controller", "kl_budget", "--kappa", "0,inf", "--m-max", "3", "--k", "3"]
    assert main([*acc, *ctl, "--out", str(root / "acc")]) == 0
    table = pd.read_parquet(root / "acc" / "accuracy.parquet")
    assert sorted(table["kappa"]) == [0.0, float("inf")]
    part = pd.read_parquet(root / "acc" / "accuracy" / "0.kl_budget.parquet")
    assert set(part.groupby("m")["mean_m"].mean()) == {0.0, 3.0}
    # kappa = 0 is the unsteered model: its accuracy is the base model's.
    assert main([*acc, "--ms", "0", "--out", str(root / "acc0")]) == 0
    base = pd.read_parquet(root / "acc0" / "accuracy.parquet")
    assert table[table["kappa"] == 0.0]["accuracy"].item() == base["accuracy"].item()
    capsys.readouterr()

    concepts = make_concept_dir(root / "concepts")
    instructions = root / "alpaca.json"
    instructions.write_text(json.dumps([{"instruction": f"Say thing {i}."} for i in range(805)]))
    ax = ["eval", "axbench", *model, "--concepts", str(concepts), "--deltas", str(delta_dir),
          "--instructions", str(instructions), "--judge", "none", "--max-new-tokens", "3",
          "--concept-ids", "0"]  # fmt: skip
    assert main([*ax, *ctl[:2], "--kappa", "0.5", "--m-max", "2", "--out", str(root / "ax")]) == 0
    gens = EvalStore(root / "ax").generations()
    assert set(gens["factor"]) == {0.5} and set(gens["controller"]) == {"kl_budget"}
    assert all(len(t) == n for t, n in zip(gens["m_trace"], gens["n_tokens"], strict=True))
    for bad, says in [
        ([*ctl, "--factors", "1,2"], "takes --kappas, not --factors"),
        (["--kappa", "0.5"], "go with --controller kl_budget or static_kl"),
        (["--controller", "static_kl"], "needs --kappas"),
    ]:
        code = main([*ax, *bad, "--out", str(root / "bad")])
        assert code == 2 and says in capsys.readouterr().err
    assert main([*acc, *ctl, "--ms", "1", "--out", str(root / "bad")]) == 2
    assert "takes --kappas, not --ms" in capsys.readouterr().err
    assert main([*acc, "--out", str(root / "bad")]) == 2
    assert "--ms (or --controller)" in capsys.readouterr().err
