"""PEFT LoRA adapters, checked by the real consumers: PEFT's ``PeftModel.from_pretrained`` and
Hugging Face's ``model.load_adapter`` compute what our hook computes; imports of adapters PEFT
itself wrote reproduce PEFT's outputs; what is not W + s·B A is refused with its reason."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

import unisteer
from unisteer.core.steering_set import SteeringSet
from unisteer.errors import DeltaLoadError, SiteError
from unisteer.interop.peft import export_peft, import_peft, low_rank

from conftest import randomize
from tiny_models import DOWN_PROJ, EXPERTS, tiny_model

ARCHS = ("llama", "gpt2", "gpt_neox")  # Linear; GPT-2's Conv1D (fan_in_fan_out); NeoX


def x() -> torch.Tensor:
    return torch.randint(3, 96, (2, 8), generator=torch.Generator().manual_seed(0))


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=x()).logits


def weights_set(model: torch.nn.Module, bias: bool = False) -> SteeringSet:
    lora = randomize(unisteer.new_delta(model, "lora", 1, rank=3), 1, 0.3)
    local = randomize(unisteer.new_delta(model, "local_weight", 2), 2, 0.1)
    if not bias:
        with torch.no_grad():
            local.bias_.zero_()
    return SteeringSet([lora, local])


@pytest.mark.parametrize("arch", ARCHS)
def test_peft_and_load_adapter_compute_our_hook(arch: str, tmp_path: Path) -> None:
    model = tiny_model(arch)
    s = weights_set(model)
    with unisteer.steer(model, s, m=1.7):
        ours = logits(model)
    base = logits(model)
    done = export_peft(model, s, 1.7, tmp_path / "a", rank=80, base_model_name_or_path=arch)
    assert done.relative_errors[s[1].site] < 1e-6
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert config["target_modules"] == sorted(s.sites)
    assert config["lora_alpha"] == config["r"] == 3
    assert config["rank_pattern"] == config["alpha_pattern"] == {s[1].site: done.ranks[s[1].site]}
    assert config["base_model_name_or_path"] == arch
    peft_model = PeftModel.from_pretrained(copy.deepcopy(model), tmp_path / "a")
    torch.testing.assert_close(logits(peft_model), ours, rtol=1e-5, atol=1e-5)
    hf = copy.deepcopy(model)
    hf.load_adapter(str(tmp_path / "a"))
    torch.testing.assert_close(logits(hf), ours, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours, base, atol=1e-3)
    assert torch.equal(logits(model), base)  # the user's model is untouched


def test_a_lora_at_m_1_is_bit_exact_in_peft(llama: torch.nn.Module, tmp_path: Path) -> None:
    lora = randomize(unisteer.new_delta(llama, "lora", 2, rank=4), 0, 0.3)
    export_peft(llama, lora, 1.0, tmp_path / "a")
    with unisteer.steer(llama, lora, m=1.0):
        ours = logits(llama)
    assert torch.equal(
        logits(PeftModel.from_pretrained(copy.deepcopy(llama), tmp_path / "a")), ours
    )


def test_truncated_svd_reports_its_error(llama: torch.nn.Module, tmp_path: Path) -> None:
    local = randomize(unisteer.new_delta(llama, "local_weight", 1), 0, 0.1)
    with torch.no_grad():
        local.bias_.zero_()
    done = export_peft(llama, local, 2.0, tmp_path / "a", rank=5)
    dw = local.weight_.detach().double()
    s = torch.linalg.svdvals(dw)
    by_hand = float(s[5:].square().sum().sqrt() / s.square().sum().sqrt())  # Eckart–Young
    assert done.relative_errors[local.site] == pytest.approx(by_hand, rel=1e-6)
    back = import_peft(tmp_path / "a", llama)[0]
    got = back.weight()
    assert got is not None
    error = float(torch.linalg.norm(got.double() - 2.0 * dw) / torch.linalg.norm(2.0 * dw))
    assert error == pytest.approx(by_hand, rel=1e-4)
    a, b, e = low_rank(dw.float(), 80)
    assert e < 1e-6 and a.shape == (32, 80) and b.shape == (32, 32)  # rank capped at min(d)


@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("arch", ARCHS)
def test_imports_what_peft_wrote(arch: str, rslora: bool, tmp_path: Path) -> None:
    model = tiny_model(arch)
    down = DOWN_PROJ[arch].split("{L}.")[1]
    attention = {"llama": "q_proj", "gpt2": "c_attn", "gpt_neox": "query_key_value"}[arch]
    config = LoraConfig(
        r=4,
        lora_alpha=12,
        target_modules=[down, attention],
        rank_pattern={attention: 2},
        alpha_pattern={attention: 5},
        use_rslora=rslora,
        fan_in_fan_out=arch == "gpt2",
        lora_dropout=0.0,
    )
    peft_model = get_peft_model(copy.deepcopy(model), config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3, generator=torch.Generator().manual_seed(len(name)))
    peft_model.eval()
    theirs = logits(peft_model)
    peft_model.save_pretrained(tmp_path / "a")
    s = import_peft(tmp_path / "a", model)
    assert len(s) == 2 * 4  # two modules in each of the four blocks
    ranks = {d.site.rsplit(".", 1)[-1]: d.rank for d in s}
    assert ranks == {down.rsplit(".", 1)[-1]: 4, attention: 2}
    with unisteer.steer(model, s, m=1.0):
        ours = logits(model)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    scale = s[0].meta["scale"]
    r = s[0].rank
    assert scale == pytest.approx((5 if r == 2 else 12) / (r**0.5 if rslora else r))


def test_round_trip_ours_peft_ours_is_exact(llama: torch.nn.Module, tmp_path: Path) -> None:
    lora = randomize(unisteer.new_delta(llama, "lora", 1, rank=3), 0, 0.3)
    export_peft(llama, lora, 0.75, tmp_path / "a")
    back = import_peft(tmp_path / "a", llama)
    assert torch.equal(back[0].lora_A, lora.lora_A)
    assert torch.equal(back[0].lora_B, 0.75 * lora.lora_B)


def peft_dir(model: torch.nn.Module, path: Path, **extra: object) -> Path:
    config = LoraConfig(r=2, target_modules=["down_proj"], lora_dropout=0.0, **extra)  # type: ignore[arg-type]
    get_peft_model(copy.deepcopy(model), config).save_pretrained(path)
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"use_dora": True}, "DoRA"),
        ({"lora_bias": True}, "lora_bias"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ],
)
def test_import_refuses_what_is_not_a_plain_lora(
    llama: torch.nn.Module, tmp_path: Path, extra: dict[str, object], message: str
) -> None:
    with pytest.raises(DeltaLoadError, match=message):
        import_peft(peft_dir(llama, tmp_path / "a", **extra), llama)


def test_import_refuses_a_lora_on_the_embeddings(llama: torch.nn.Module, tmp_path: Path) -> None:
    config = LoraConfig(r=2, target_modules=["embed_tokens"], lora_dropout=0.0)
    get_peft_model(copy.deepcopy(llama), config).save_pretrained(tmp_path / "a")
    with pytest.raises(DeltaLoadError, match="LoRA on an embedding"):
        import_peft(tmp_path / "a", llama)


def test_import_refuses_damaged_or_foreign_folders(llama: torch.nn.Module, tmp_path: Path) -> None:
    with pytest.raises(DeltaLoadError, match="not a PEFT adapter"):
        import_peft(tmp_path, llama)
    folder = peft_dir(llama, tmp_path / "a")
    (folder / "adapter_model.safetensors").unlink()
    (folder / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(DeltaLoadError, match=r"pickled adapter_model\.bin files are refused"):
        import_peft(folder, llama)
    folder = peft_dir(llama, tmp_path / "b")
    config = json.loads((folder / "adapter_config.json").read_text())
    config["peft_type"] = "IA3"
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(DeltaLoadError, match="only LoRA adapters"):
        import_peft(folder, llama)
    config["peft_type"] = "LORA"
    config["r"] = 3
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(DeltaLoadError, match="has rank 2, the config says 3"):
        import_peft(folder, llama)
    with pytest.raises(DeltaLoadError, match="does not fit this model"):
        import_peft(peft_dir(llama, tmp_path / "c"), tiny_model("gpt2"))


def test_export_refuses_what_an_adapter_cannot_hold(llama: torch.nn.Module, tmp_path: Path) -> None:
    out = tmp_path / "a"
    with pytest.raises(SiteError, match=r"adds a bias.*export gguf"):
        export_peft(llama, unisteer.new_delta(llama, "vector", 1), 1.0, out)
    local = randomize(unisteer.new_delta(llama, "local_weight", 1), 0, 0.1)
    with pytest.raises(SiteError, match=r"has a bias Δb.*drop_bias=True"):
        export_peft(llama, local, 1.0, out, rank=4)
    with pytest.raises(ValueError, match="give the rank"):
        export_peft(llama, local, 1.0, out, drop_bias=True)
    assert not out.exists()
    done = export_peft(llama, local, 1.0, out, rank=4, drop_bias=True)
    assert done.ranks == {local.site: 4}
    moe = tiny_model("mixtral")
    experts = unisteer.new_delta(moe, "lora", 1, rank=2, site=EXPERTS["mixtral"])
    with pytest.raises(SiteError, match="fused experts"):
        export_peft(moe, experts, 1.0, tmp_path / "b")
