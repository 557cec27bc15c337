"""llama.cpp / repeng control vectors: the file obeys llama.cpp's loader rules (read back with
gguf.GGUFReader), round trips are exact, and what llama.cpp cannot steer is refused."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

import unisteer
from unisteer.core.steering_set import SteeringSet
from unisteer.errors import DeltaLoadError, SiteError
from unisteer.interop.gguf import export_control_vector, import_control_vector, read_control_vector

from conftest import randomize
from tiny_models import HIDDEN, LAYERS, tiny_model
from tiny_pairs import random_pairs
from tiny_tokenizers import word_tokenizer


def vectors(model: torch.nn.Module, layers: tuple[int, ...] = (1, 3)) -> SteeringSet:
    return SteeringSet([randomize(unisteer.new_delta(model, "vector", L), L, 0.5) for L in layers])


def logits(model: torch.nn.Module) -> torch.Tensor:
    x = torch.randint(3, 96, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(input_ids=x).logits


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_file_follows_the_loader_rules(arch: str, tmp_path: Path) -> None:
    model = tiny_model(arch)
    s = vectors(model)
    path = export_control_vector(model, s, 2.5, tmp_path / "cv.gguf")
    reader = gguf.GGUFReader(path)
    fields = {k: reader.fields[k].contents() for k in reader.fields if not k.startswith("GGUF.")}
    assert fields == {
        "general.architecture": "controlvector",
        "controlvector.model_hint": model.config.model_type,
        "controlvector.layer_count": 2,
    }
    assert [t.name for t in reader.tensors] == ["direction.1", "direction.3"]
    for t, d in zip(reader.tensors, s, strict=True):
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        assert [int(n) for n in t.shape] == [HIDDEN]  # 1-D, n_embd long
        expected = (2.5 * d.bias_.detach()).numpy()
        assert np.array_equal(np.asarray(t.data), expected)
    assert all(1 <= int(t.name.split(".")[1]) < LAYERS for t in reader.tensors)


def test_round_trip_is_exact(llama: torch.nn.Module, tmp_path: Path) -> None:
    s = vectors(llama, (1, 2, 3))
    path = export_control_vector(llama, s, -1.5, tmp_path / "cv.gguf")
    back = import_control_vector(path, llama)
    assert back.sites == s.sites and back.meta["model_hint"] == "llama"
    with unisteer.steer(llama, s, m=-1.5):
        ours = logits(llama)
    with unisteer.steer(llama, back, m=1.0):
        theirs = logits(llama)
    assert torch.equal(ours, theirs)
    assert not torch.allclose(ours, logits(llama), atol=1e-3)  # it does steer


def write(path: Path, tensors: dict[str, np.ndarray], arch: str = "controlvector") -> Path:
    """A control vector written the way repeng writes one (gguf.GGUFWriter, model_hint)."""
    w = gguf.GGUFWriter(path, arch)
    w.add_string(f"{arch}.model_hint", "llama")
    w.add_uint32(f"{arch}.layer_count", len(tensors))
    for name, data in tensors.items():
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_imports_a_repeng_style_file(llama: torch.nn.Module, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    dirs = {f"direction.{n}": rng.normal(size=HIDDEN).astype(np.float32) for n in (1, 2)}
    s = import_control_vector(write(tmp_path / "r.gguf", dirs), llama)
    assert s.sites == ["model.layers.1", "model.layers.2"]
    assert np.array_equal(s[1].bias_.detach().numpy(), dirs["direction.2"])
    table = unisteer.sweep(
        llama, word_tokenizer(), random_pairs(3), s, [0.0, 1.0], progress=False
    ).table
    assert table.groupby("m")["loss_pos"].sum().diff().abs().iloc[-1] > 0  # it moves scores


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"direction.0": np.ones(HIDDEN, np.float32)}, "direction.0"),
        ({"direction.1": np.ones(HIDDEN, np.float16)}, "not F32"),
        ({"direction.1": np.ones((2, HIDDEN), np.float32)}, "not 1-D"),
        (
            {"direction.1": np.ones(HIDDEN, np.float32), "direction.2": np.ones(8, np.float32)},
            "length 8",
        ),
        ({"vector.1": np.ones(HIDDEN, np.float32)}, "not named direction.N"),
        ({"direction.x": np.ones(HIDDEN, np.float32)}, "not named direction.N"),
        ({"direction.1": np.full(HIDDEN, np.nan, np.float32)}, "NaN"),
    ],
)
def test_reader_refuses_what_llama_cpp_would_skip(
    tensors: dict[str, np.ndarray], message: str, tmp_path: Path
) -> None:
    with pytest.raises(DeltaLoadError, match=message):
        read_control_vector(write(tmp_path / "bad.gguf", tensors))


def test_import_refuses_a_file_for_another_model(llama: torch.nn.Module, tmp_path: Path) -> None:
    far = write(tmp_path / "far.gguf", {f"direction.{LAYERS}": np.ones(HIDDEN, np.float32)})
    with pytest.raises(DeltaLoadError, match="past the model's last block"):
        import_control_vector(far, llama)
    wide = write(tmp_path / "wide.gguf", {"direction.1": np.ones(2 * HIDDEN, np.float32)})
    with pytest.raises(DeltaLoadError, match="width"):
        import_control_vector(wide, llama)
    model = write(tmp_path / "m.gguf", {"direction.1": np.ones(HIDDEN, np.float32)}, "llama")
    with pytest.raises(DeltaLoadError, match="not a control vector"):
        read_control_vector(model)
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(DeltaLoadError, match="not a readable GGUF"):
        read_control_vector(tmp_path / "junk.gguf")


def test_export_refuses_what_llama_cpp_cannot_steer(llama: torch.nn.Module, tmp_path: Path) -> None:
    out = tmp_path / "x.gguf"
    lora = randomize(unisteer.new_delta(llama, "lora", 1, rank=2))
    with pytest.raises(SiteError, match=r"changes a weight.*export peft.*export merged"):
        export_control_vector(llama, lora, 1.0, out)
    on_linear = unisteer.new_delta(llama, "vector", 1, site="model.layers.1.mlp.down_proj")
    with pytest.raises(SiteError, match="not at a block output"):
        export_control_vector(llama, on_linear, 1.0, out)
    with pytest.raises(SiteError, match=r"block 0, which llama\.cpp.s loader refuses"):
        export_control_vector(llama, vectors(llama, (0, 2)), 1.0, out)
    with pytest.raises(ValueError, match="finite"):
        export_control_vector(llama, vectors(llama), float("nan"), out)
    assert not out.exists()


def test_export_refuses_families_llama_cpp_does_not_steer(tmp_path: Path) -> None:
    opt = tiny_model("opt")  # llama.cpp has no OPT graph
    s = vectors(opt)
    with pytest.raises(SiteError, match=r"does not know whether llama\.cpp steers .opt."):
        export_control_vector(opt, s, 1.0, tmp_path / "o.gguf")
    assert export_control_vector(opt, s, 1.0, tmp_path / "o.gguf", any_family=True).exists()
    gptj_like = tiny_model("llama")
    gptj_like.config.model_type = "gptj"
    with pytest.raises(SiteError, match="no control-vector hook"):
        export_control_vector(gptj_like, vectors(gptj_like), 1.0, tmp_path / "j.gguf")
