"""``unisteer export`` and ``unisteer import`` on a tiny saved model: each writes what its
consumer reads, imports round-trip, and a refused export exits 2 with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import unisteer
from unisteer.cli import main

from conftest import randomize
from tiny_models import tiny_model
from tiny_tokenizers import CHATML, word_tokenizer


@pytest.fixture
def saved(tmp_path: Path) -> dict[str, Path]:
    model_dir = tmp_path / "tiny-llama"
    tiny_model("llama").save_pretrained(model_dir)
    word_tokenizer(chat_template=CHATML).save_pretrained(model_dir)
    model, tok = unisteer.load_model(str(model_dir))
    vectors = unisteer.SteeringSet(
        [randomize(unisteer.new_delta(model, "vector", L, tokenizer=tok), L) for L in (1, 2)]
    )
    unisteer.save_steering_set(vectors, tmp_path / "vectors")
    lora = randomize(unisteer.new_delta(model, "lora", 1, rank=2, tokenizer=tok), 3, 0.3)
    unisteer.save_delta(lora, tmp_path / "lora")
    return {"model": model_dir, "root": tmp_path}


def logits(model: torch.nn.Module) -> torch.Tensor:
    x = torch.randint(3, 96, (1, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(input_ids=x).logits


def test_export_and_import_round_trip(
    saved: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root, model_arg = saved["root"], ["--model", str(saved["model"])]
    model, _ = unisteer.load_model(str(saved["model"]))

    assert (
        main(
            [
                "export",
                "gguf",
                str(root / "vectors"),
                "--m",
                "2",
                "--out",
                str(root / "cv.gguf"),
                *model_arg,
            ]
        )
        == 0
    )
    assert "--control-vector" in capsys.readouterr().out
    assert (
        main(["import", "gguf", str(root / "cv.gguf"), "--out", str(root / "back"), *model_arg])
        == 0
    )
    assert "2 deltas" in capsys.readouterr().out
    vectors = unisteer.load_steerable(root / "vectors", model)
    back = unisteer.load_steerable(root / "back", model)
    with unisteer.steer(model, vectors, m=2.0):
        want = logits(model)
    with unisteer.steer(model, back, m=1.0):  # m is folded into the file
        torch.testing.assert_close(logits(model), want, rtol=0, atol=0)

    assert (
        main(
            [
                "export",
                "peft",
                str(root / "lora"),
                "--m",
                "1.5",
                "--out",
                str(root / "peft"),
                *model_arg,
            ]
        )
        == 0
    )
    assert "exact" in capsys.readouterr().out
    config = json.loads((root / "peft" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(saved["model"])
    assert (
        main(["import", "peft", str(root / "peft"), "--out", str(root / "peft-back"), *model_arg])
        == 0
    )
    lora = unisteer.load_steerable(root / "lora", model)
    with unisteer.steer(model, lora, m=1.5):
        want = logits(model)
    with unisteer.steer(model, unisteer.load_steerable(root / "peft-back", model), m=1.0):
        torch.testing.assert_close(logits(model), want, rtol=1e-6, atol=1e-6)

    assert (
        main(
            [
                "export",
                "merged",
                str(root / "lora"),
                "--m",
                "1.5",
                "--out",
                str(root / "merged"),
                *model_arg,
            ]
        )
        == 0
    )
    fresh = AutoModelForCausalLM.from_pretrained(root / "merged", dtype=torch.float32)
    torch.testing.assert_close(logits(fresh), want, rtol=1e-5, atol=1e-5)
    assert (root / "merged" / "tokenizer_config.json").is_file()


def test_refused_exports_exit_2_with_the_reason(
    saved: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root, model_arg = saved["root"], ["--model", str(saved["model"])]
    code = main(
        [
            "export",
            "gguf",
            str(root / "lora"),
            "--m",
            "1",
            "--out",
            str(root / "x.gguf"),
            *model_arg,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "only adds vectors to block outputs" in err and "Traceback" not in err
    assert not (root / "x.gguf").exists()
    code = main(
        [
            "export",
            "merged",
            str(root / "vectors"),
            "--m",
            "1",
            "--out",
            str(root / "m"),
            *model_arg,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "residual" in err and not (root / "m").exists()
    with pytest.raises(SystemExit) as exited:  # argparse's own exit for a bad argument
        main(["export", "gguf", str(root / "vectors"), "--m", "inf", "--out", str(root / "y.gguf")])
    assert exited.value.code == 2 and "argument --m" in capsys.readouterr().err
    code = main(["import", "peft", str(root / "nowhere"), "--out", str(root / "z"), *model_arg])
    assert code == 2 and "nowhere" in capsys.readouterr().err
