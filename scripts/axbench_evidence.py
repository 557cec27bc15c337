"""SPLIT against SFT and RePS on AxBench concepts, scored by the offline proxy judge.

For each concept: pairs from the AxBench concept data (each concept response paired with the
default model's own answer to the same instruction, generated once and cached), a vector
trained with SFT, RePS and SPLIT at the middle layer; then the AxBench protocol (10 AlpacaEval
instructions per concept, 0-4 select the factor, 5-9 report, 128 new tokens at temperature 1)
for each method and the unsteered model, rated by the proxy judge.

    python scripts/axbench_evidence.py --out unisteer-out/axbench [--concepts 0,2,7]

Prints the per-method concept score and harmonic mean (proxy scores: not comparable with
AxBench's LLM-judge numbers) and writes everything under OUT.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

import unisteer
from unisteer.data import PairSet
from unisteer.data.axbench import read_axbench
from unisteer.evaluate import eval_axbench, make_judge
from unisteer.generation import base_responder
from unisteer.training.trainer import train

CONCEPTS = (
    Path(__file__).resolve().parents[1].parent / "shared/data/axbench/concept10/prod_2b_l10_v1"
)


def concept_delta(
    model: Any, tok: Any, data: Path, where: Path, cid: int, objective: str, *,
    pairs: int = 24, epochs: int = 2,
) -> Path:  # fmt: skip
    """A vector for AxBench concept ``cid`` trained with ``objective`` on ``pairs`` pairs (the
    concept's response against the default model's own answer), saved at ``where`` (reused
    when already there)."""
    if not (where / "delta.json").is_file():
        found = read_axbench(data / "generate", base_responder(model, tok), concept_ids=[cid])
        order = list(range(len(found)))
        random.Random(cid).shuffle(order)
        chosen = PairSet([found[i] for i in order[:pairs]], name=found.name)
        extra = {} if objective == "diffmean" else {"epochs": epochs}
        delta = train(model, tok, chosen, kind="vector", objective=objective, **extra)
        delta.meta["concept_id"] = cid
        unisteer.save_delta(delta, where)
    return where


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=CONCEPTS)
    ap.add_argument("--concepts", default="0,2,7")
    ap.add_argument("--pairs", type=int, default=24, help="training pairs per concept")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--factors", default="4,10,16")
    args = ap.parse_args()
    ids = [int(x) for x in args.concepts.split(",")]
    factors = [float(x) for x in args.factors.split(",")]
    model, tok = unisteer.load_model()
    judge = make_judge(
        "proxy", concepts_path=args.data / "generate", model=model, tokenizer=tok, concept_ids=ids
    )
    print(f"judge: {judge.name}")
    for method in ("sft", "reps", "split"):
        dirs = {}
        for cid in ids:
            where = args.out / "deltas" / method / str(cid)
            dirs[str(cid)] = concept_delta(
                model, tok, args.data, where, cid, method, pairs=args.pairs, epochs=args.epochs
            )
        report = eval_axbench(
            model,
            tok,
            args.data / "generate",
            dirs,
            judge,
            factors,
            args.out / "axbench",
            concept_ids=ids,
            method=f"vector-{method}",
        )
        assert report is not None
    report = eval_axbench(
        model,
        tok,
        args.data / "generate",
        None,
        judge,
        [0.0],
        args.out / "axbench",
        concept_ids=ids,
        method="unsteered",
        baseline="unsteered",
    )
    assert report is not None
    print(report.format())


if __name__ == "__main__":
    main()
