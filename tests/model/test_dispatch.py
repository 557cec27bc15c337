"""Dispatched models: load_model's device_map arguments, where modules run, and the memory the
blocks' devices have (also from a device map plan alone, for a 70B-shaped empty model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from unisteer import ModelLoadError, load_model
from unisteer.errors import PlacementError
from unisteer.model import memory
from unisteer.model.devices import (
    as_device,
    execution_device,
    is_dispatched,
    is_offloaded,
    planned_device,
)

from tiny_models import tiny_model
from tiny_tokenizers import word_tokenizer

#: Every block on its own device kind: the CPU (in memory) or disk (offloaded).
TINY_MAP = {
    "model.embed_tokens": "cpu",
    "model.rotary_emb": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "disk",
    "model.layers.2": "cpu",
    "model.layers.3": "disk",
    "model.norm": "cpu",
    "lm_head": "disk",
}


def saved_llama(directory: Path) -> Path:
    path = directory / "llama"
    tiny_model("llama").save_pretrained(path)
    word_tokenizer().save_pretrained(path)
    return path


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"device": "cpu", "device_map": "auto"}, "either device"),
        ({"device_map": {"model": "disk"}}, "offload_folder"),
        ({"offload_folder": "x"}, "give device_map"),
        ({"max_memory": {"cpu": "1GiB"}}, "give device_map"),
        ({"device_map": {}}, "empty"),
        ({"device_map": 3}, "must be a string"),
    ],
)
def test_contradictory_placement_is_refused_before_loading(
    kwargs: dict[str, Any], match: str, tmp_path: Path
) -> None:
    with pytest.raises(PlacementError, match=match) as info:
        load_model(str(tmp_path / "nowhere"), **kwargs)
    assert isinstance(info.value, ModelLoadError)


def test_device_map_goes_through_and_the_model_is_not_moved(tmp_path: Path) -> None:
    model, _ = load_model(
        str(saved_llama(tmp_path)), device_map=TINY_MAP, offload_folder=tmp_path / "off"
    )
    assert model.hf_device_map == TINY_MAP
    assert is_dispatched(model) and not model.training
    assert is_offloaded(model.model.layers[1]) and not is_offloaded(model.model.layers[0])
    assert all(execution_device(b) == torch.device("cpu") for b in model.model.layers)
    assert memory.block_devices(model) == [torch.device("cpu")]
    assert memory.model_device(model) == torch.device("cpu")


def test_execution_device_reads_the_accelerate_hook() -> None:
    class Hook:
        execution_device = 1

    class Chain:
        hooks = (object(), Hook())

    module = torch.nn.Linear(2, 2)
    assert execution_device(module) == torch.device("cpu")
    module._hf_hook = Chain()  # type: ignore[assignment]
    assert execution_device(module) == torch.device("cuda", 1)
    with torch.device("meta"):
        empty = torch.nn.Sequential(torch.nn.Linear(2, 2))
    assert execution_device(empty) == torch.device("cpu")
    assert as_device("disk") == as_device("meta") == torch.device("cpu")


def test_planned_device_takes_the_longest_entry() -> None:
    plan = {"": "cpu", "model.layers.1": 0, "model.layers.10": "disk", "lm_head": 1}
    assert planned_device(plan, "model.layers.1") == torch.device("cuda", 0)
    assert planned_device(plan, "model.layers.1.mlp") == torch.device("cuda", 0)
    # "disk" and "cpu" entries compute on the plan's first GPU, as accelerate runs them.
    assert planned_device(plan, "model.layers.10") == torch.device("cuda", 0)
    assert planned_device(plan, "model.norm") == torch.device("cuda", 0)
    assert planned_device({"model": "cpu"}, "model.layers.3") == torch.device("cpu")
    assert planned_device({"lm_head": 0}, "model.layers.3") is None


def empty_70b() -> torch.nn.Module:
    """A Llama with the widths of a 70B model and no weights in memory."""
    from accelerate import init_empty_weights

    config = LlamaConfig(
        hidden_size=8192,
        num_hidden_layers=80,
        intermediate_size=28672,
        num_attention_heads=64,
        num_key_value_heads=8,
        vocab_size=128256,
        max_position_embeddings=8192,
    )
    with init_empty_weights():
        return AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)


def test_a_70b_plan_is_sized_by_the_gpus_it_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    from accelerate import infer_auto_device_map

    model = empty_70b()
    assert all(p.device.type == "meta" for p in model.parameters())
    plan = infer_auto_device_map(
        model,
        max_memory={0: "80GiB", 1: "80GiB", "cpu": "200GiB"},
        no_split_module_classes=["LlamaDecoderLayer"],
        dtype=torch.bfloat16,
    )
    assert {0, 1} <= set(plan.values())
    free = {0: 30 << 30, 1: 12 << 30}
    asked: list[torch.device] = []

    def mem_get_info(device: torch.device) -> tuple[int, int]:
        asked.append(device)
        return free[device.index], 80 << 30

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    devices = memory.block_devices(model, plan)
    assert set(devices) <= {torch.device("cuda", 0), torch.device("cuda", 1)}
    assert torch.device("cuda", 1) in devices
    # The least free over the blocks' GPUs, never the host's memory.
    assert memory.free_bytes(model, plan) == 12 << 30
    assert memory.batch_budget(model, 1 << 40, plan) == 12 << 30
    assert memory.batch_budget(model, 1 << 20, plan) == 1 << 20
    assert set(asked) == set(devices)
    assert all(p.device.type == "meta" for p in model.parameters())


def test_free_bytes_on_the_cpu_is_host_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model("llama")
    monkeypatch.setattr(
        memory, "available_bytes", lambda device: 5_000 if device.type == "cpu" else None
    )
    assert memory.free_bytes(model) == 5_000
    assert memory.free_bytes(model, {"model": "disk", "lm_head": "cpu"}) == 5_000
    assert memory.batch_budget(model, 1 << 30) == 5_000


def test_a_pair_is_checked_against_the_plans_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    from accelerate import infer_auto_device_map

    from unisteer.data import PolarityPair
    from unisteer.data.tokens import Encoded
    from unisteer.errors import DataError

    model = empty_70b()
    plan = infer_auto_device_map(
        model, max_memory={0: "80GiB", 1: "80GiB", "cpu": "200GiB"}, dtype=torch.bfloat16
    )
    pair = PolarityPair(id="p", query="q", positive="a", negative="b")
    rows = (Encoded(tuple(range(512)), 10, 512), Encoded(tuple(range(512)), 10, 512))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (40 << 30, 80 << 30))
    memory.check_pairs_fit(model, [pair], [rows], "scoring", device_map=plan)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (1 << 20, 80 << 30))
    with pytest.raises(DataError, match="devices running the model's blocks"):
        memory.check_pairs_fit(model, [pair], [rows], "scoring", device_map=plan)
