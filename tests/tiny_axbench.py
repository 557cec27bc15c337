"""Small synthetic AxBench-style concept data (two concepts, "the sea" and "greetings"), for
the AxBench, judge and CLI tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd

SEA = "sea ocean waves tide salt ship sailing harbour coral whale beach gulls"
HELLO = "hello greetings welcome good morning hi bye farewell nice to meet"
TOPICS = {"the sea": SEA.split(" "), "greetings": HELLO.split(" ")}
_FILLER = (
    "the report covers budget sales numbers office train city bread market software bug "
    "meeting spreadsheet email update team plan project kitchen recipe garden"
)
FILLER = _FILLER.split(" ")
INSTRUCTIONS = [f"Tell me about item number {i} in the list." for i in range(24)]


def sentence(rng: random.Random, words: list[str], topic: list[str] | None, n: int = 14) -> str:
    out = [rng.choice(words) for _ in range(n)]
    if topic:
        for k in rng.sample(range(n), 5):
            out[k] = rng.choice(topic)
    return " ".join(out) + "."


def make_concept_dir(root: Path, n_pos: int = 20, n_neg: int = 30, seed: int = 0) -> Path:
    """``root/generate/{train_data.parquet,metadata.jsonl}`` and ``root/inference/...``."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n_neg):
        rows.append(
            {
                "input": rng.choice(INSTRUCTIONS),
                "output": sentence(rng, FILLER, None),
                "output_concept": "EEEEE",
                "concept_genre": "text",
                "category": "negative",
                "dataset_category": "instruction",
                "concept_id": -1,
            }
        )
    for cid, (concept, words) in enumerate(TOPICS.items()):
        for _ in range(n_pos):
            rows.append(
                {
                    "input": rng.choice(INSTRUCTIONS),
                    "output": sentence(rng, FILLER, words),
                    "output_concept": concept,
                    "concept_genre": "text",
                    "category": "positive",
                    "dataset_category": "instruction",
                    "concept_id": cid,
                }
            )
    (root / "generate").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(root / "generate" / "train_data.parquet")
    meta = [json.dumps({"concept_id": cid, "concept": c}) for cid, c in enumerate(TOPICS)]
    (root / "generate" / "metadata.jsonl").write_text("\n".join(meta) + "\n")
    evals = []
    for cid, (concept, words) in enumerate(TOPICS.items()):
        for label in ("positive", "negative"):
            for _ in range(12):
                evals.append(
                    {
                        "input": rng.choice(INSTRUCTIONS),
                        "output": sentence(rng, FILLER, words if label == "positive" else None),
                        "output_concept": concept,
                        "concept_genre": "text",
                        "category": label,
                        "dataset_category": "instruction",
                        "concept_id": cid,
                    }
                )
    (root / "inference").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(evals).to_parquet(root / "inference" / "latent_eval_data.parquet")
    return root
