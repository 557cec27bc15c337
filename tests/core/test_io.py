"""Saving and loading deltas: safetensors + JSON, fingerprints, shape checks, no pickles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

import unisteer
from unisteer import DeltaLoadError, load_delta, save_delta, steer

from conftest import make_delta
from tiny_models import tiny_model

KINDS = ("vector", "lora", "local_weight")


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_preserves_numbers_and_metadata(tmp_path: Path, kind: str) -> None:
    model = tiny_model("llama")
    delta = make_delta(model, kind)
    delta.meta = {"objective": "split", "hparams": {"lr": 0.01}, "m_range": [-3.0, 3.0]}
    save_delta(delta, tmp_path / "d")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["delta.json", "delta.safetensors"]
    meta = json.loads((tmp_path / "d" / "delta.json").read_text())
    assert meta["kind"] == kind and meta["site"] == delta.site and meta["layer"] == 1
    assert meta["dtype"] == "float32" and meta["fingerprint"]["config"]
    assert meta["meta"]["hparams"] == {"lr": 0.01} and meta["unisteer_version"]
    assert meta["shapes"] == {k: list(v) for k, v in delta.expected_shapes().items()}
    loaded = load_delta(tmp_path / "d", model)
    for name, tensor in delta.tensors().items():
        assert torch.equal(loaded.tensors()[name], tensor)
    assert (loaded.kind, loaded.site, loaded.rank, loaded.meta) == (
        delta.kind,
        delta.site,
        delta.rank,
        delta.meta,
    )
    ids = torch.randint(3, 96, (2, 5))
    with torch.no_grad(), steer(model, delta, m=1.0):
        a = model(ids).logits
    with torch.no_grad(), steer(model, loaded, m=1.0):
        b = model(ids).logits
    assert torch.equal(a, b)
    # Loading by file name works too; saving again overwrites cleanly.
    load_delta(tmp_path / "d" / "delta.json")
    save_delta(loaded, tmp_path / "d")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["delta.json", "delta.safetensors"]


def test_other_shapes_are_refused_with_the_shapes(tmp_path: Path) -> None:
    model = tiny_model("llama")
    save_delta(make_delta(model, "lora"), tmp_path / "d")
    other = AutoModelForCausalLM.from_config(
        LlamaConfig(
            vocab_size=96,
            hidden_size=48,
            intermediate_size=80,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    with pytest.raises(DeltaLoadError, match=r"expects a 80->32 map .* has 80->48"):
        load_delta(tmp_path / "d", other)


def test_other_fingerprint_is_refused_and_can_be_overridden(tmp_path: Path) -> None:
    model = tiny_model("llama")
    save_delta(make_delta(model, "vector"), tmp_path / "d")
    config = model.config
    config_dict = config.to_dict()
    config_dict["rope_parameters"] = {"rope_type": "default", "rope_theta": 1234.0}
    other = AutoModelForCausalLM.from_config(LlamaConfig.from_dict(config_dict))
    with pytest.raises(DeltaLoadError, match="made for another model: the model config differs"):
        load_delta(tmp_path / "d", other)
    assert load_delta(tmp_path / "d", other, check_fingerprint=False).kind == "vector"
    # The same architecture with other random weights has the same fingerprint.
    load_delta(tmp_path / "d", tiny_model("llama", seed=5))


def test_tokenizer_mismatch_is_named(tmp_path: Path) -> None:
    class Tok:
        def __init__(self, vocab: dict[str, int]) -> None:
            self.vocab = vocab
            self.chat_template = None

        def get_vocab(self) -> dict[str, int]:
            return self.vocab

    model = tiny_model("llama")
    d = unisteer.new_delta(model, "vector", 1, tokenizer=Tok({"a": 0, "b": 1}))
    save_delta(d, tmp_path / "d")
    load_delta(tmp_path / "d", model, tokenizer=Tok({"a": 0, "b": 1}))
    with pytest.raises(DeltaLoadError, match="the tokenizer differs"):
        load_delta(tmp_path / "d", model, tokenizer=Tok({"a": 0, "c": 1}))


def test_pickles_are_refused(tmp_path: Path) -> None:
    torch.save({"bias": torch.zeros(3)}, tmp_path / "vector.pt")
    with pytest.raises(DeltaLoadError, match=r"refusing to load .*vector\.pt.*pickle"):
        load_delta(tmp_path / "vector.pt")
    with pytest.raises(
        DeltaLoadError, match=r"no delta\.json .* vector\.pt: pickle files are refused"
    ):
        load_delta(tmp_path)


def test_damaged_directories_are_detected(tmp_path: Path) -> None:
    model = tiny_model("llama")
    d = make_delta(model, "local_weight")
    save_delta(d, tmp_path / "d")
    meta_path = tmp_path / "d" / "delta.json"
    tensors_path = tmp_path / "d" / "delta.safetensors"
    original_meta = meta_path.read_text()
    original_tensors = tensors_path.read_bytes()

    tensors_path.write_bytes(original_tensors[:-8])
    with pytest.raises(DeltaLoadError, match="does not match the hash"):
        load_delta(tmp_path / "d")
    tensors_path.write_bytes(original_tensors)

    meta_path.write_text("{not json")
    with pytest.raises(DeltaLoadError, match=r"delta\.json is not valid JSON"):
        load_delta(tmp_path / "d")

    meta = json.loads(original_meta)
    del meta["d_in"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DeltaLoadError, match="missing key 'd_in'"):
        load_delta(tmp_path / "d")

    meta = json.loads(original_meta)
    meta["d_out"] = "32"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DeltaLoadError, match="'d_out' should be int, got str"):
        load_delta(tmp_path / "d")

    meta = json.loads(original_meta)
    meta["d_in"] = 81
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(
        DeltaLoadError, match=r"tensor 'weight' has shape \(32, 80\).* says \(32, 81\)"
    ):
        load_delta(tmp_path / "d")

    meta = json.loads(original_meta)
    meta["format_version"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DeltaLoadError, match="newer than this unisteer"):
        load_delta(tmp_path / "d")


def test_failed_save_leaves_previous_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model("llama")
    d = make_delta(model, "vector")
    save_delta(d, tmp_path / "d")
    before = {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir()}
    d.meta = {"bad": object()}
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_delta(d, tmp_path / "d")
    after = {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir()}
    assert after == before

    import unisteer.files as atomic

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    d.meta = {}
    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_delta(d, tmp_path / "d")
    assert {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir()} == before
