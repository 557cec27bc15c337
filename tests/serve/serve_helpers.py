"""A tiny model, a tiny experiment's deltas and a server over them, shared by the serve tests
(import the fixtures from here)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from unisteer import load_model
from unisteer.serve import open_server
from unisteer.serve.registry import experiment_deltas
from unisteer.serve.server import Server

from tiny_models import tiny_model
from tiny_pairs import run_tiny, split_pairs_file
from tiny_tokenizers import CHATML, word_tokenizer

EXPERIMENT = """\
name = "served"

[data]
source = "{data}"
train_pairs = 8
test_pairs = 4
sweep_train_pairs = 4

[model]
layer = 1

[train]
epochs = 1
batch_size = 4

[sweep]
points = 7

[fit]
starts = 2

[report]
samples = 0

[[method]]
kind = "vector"
objective = "diffmean"

[[method]]
kind = "lora"
objective = "sft"
grid = "-3:3:7"
"""


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny llama saved to a folder, and a finished experiment over it."""
    root = tmp_path_factory.mktemp("served")
    model_dir = root / "model"
    tiny_model("llama").save_pretrained(model_dir)
    word_tokenizer(chat_template=CHATML).save_pretrained(model_dir)
    _, out = run_tiny(EXPERIMENT.format(data=split_pairs_file(root)), root)
    model, tok = load_model(str(model_dir))
    return {"root": root, "model_dir": model_dir, "out": out, "model": model, "tok": tok}


def start(served: dict[str, Any], **kwargs: Any) -> Server:
    deltas = dict(experiment_deltas(served["out"]))
    return open_server(
        served["model"], served["tok"], deltas, model_id="tiny", port=0, **kwargs
    ).start()


@pytest.fixture(scope="module")
def server(served: dict[str, Any]) -> Iterator[Server]:
    s = start(served)
    yield s
    s.close()


__all__ = ["Path", "served", "server", "start"]
