"""``unisteer train``: train a delta and write it (safetensors + JSON) with its training log."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from unisteer.cli.data import (
    add_length_options,
    add_source_options,
    check_length_options,
    load_source,
    pick_split,
    within_limits,
)
from unisteer.data.pairs import PairSet
from unisteer.errors import UsageError


def register(sub: Any) -> None:
    from unisteer.model import DEFAULT_MODEL

    p = sub.add_parser("train", help="train a vector, LoRA or local-weight delta")
    p.add_argument("--model", default=DEFAULT_MODEL, help="built-in name, directory or HF id")
    p.add_argument("--data", required=True, help="a data file or default[:CONCEPT]")
    add_source_options(p)
    add_length_options(p)
    p.add_argument(
        "--split",
        choices=["auto", "all", "train"],
        default="auto",
        help="pairs to train on: the recorded train split when the data has one (auto), or all",
    )
    p.add_argument("--kind", choices=["vector", "lora", "local_weight"], default="vector")
    p.add_argument("--objective", choices=["diffmean", "sft", "reps", "split"], default="split")
    p.add_argument("--layer", type=int, help="decoder block (default: the middle one)")
    p.add_argument("--site", help='explicit site, e.g. "model.layers.{L}.mlp.down_proj"')
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--preset", help="the paper's settings, e.g. psychopathy-gemma-vector-split")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="hold out this fraction of the training pairs for validation (default 0.1; 0: none)",
    )
    hp = p.add_argument_group("hyper-parameters (default: the preset's, else the kind's)")
    hp.add_argument("--lr", type=float)
    hp.add_argument("--epochs", type=int)
    hp.add_argument("--batch-size", type=int)
    hp.add_argument("--grad-accum", type=int)
    hp.add_argument("--multipliers", help="comma list of training multipliers, e.g. 2,4,6")
    hp.add_argument("--seed", type=int)
    hp.add_argument("--rank", type=int, help="LoRA rank (default 4)")
    hp.add_argument("--positions", choices=["all", "prompt", "completion"])
    hp.add_argument("--lambda-n", type=float)
    hp.add_argument("--gamma", type=float)
    hp.add_argument("--theta", type=float)
    hp.add_argument("--split-form", choices=["pair", "minibatch"])
    hp.add_argument("--reps-normalizer", choices=["completion", "sequence"])
    hp.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=None)
    hp.add_argument("--checkpoint-every", type=int)
    p.add_argument("--method", choices=["cached", "naive"], default="cached")
    p.set_defaults(func=run)


def _multipliers(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(
            f"argument --multipliers: expected numbers like 2,4,6, got {text!r}"
        ) from None
    return values


def run(args: argparse.Namespace) -> int:
    from unisteer.files import OutputLock, check_output_dir

    if not 0.0 <= args.val_fraction < 1.0:
        raise UsageError("argument --val-fraction: must be in [0, 1)")
    if args.layer is not None and args.layer < 0:
        raise UsageError(f"argument --layer: must be 0 or more, got {args.layer}")
    _multipliers(args.multipliers)  # bad values are reported before the model loads
    check_length_options(args)
    out = check_output_dir(args.out, "--out folder")
    with OutputLock(out):
        return _train(args, out)


def _train(args: argparse.Namespace, out: Path) -> int:
    from unisteer.core.io import save_delta
    from unisteer.files import write_text_atomic
    from unisteer.model.load import load_model
    from unisteer.training.trainer import TrainingDiverged, train

    # data problems are reported before the model loads
    pairs = load_source(args, args.data, strict=not args.lenient)
    unreadable = [str(x) for x in pairs.problems]
    pairs = PairSet(pairs, name=pairs.name)  # the rows left out are listed once, below
    if args.split == "train" or (args.split == "auto" and pairs.has_fixed_split()):
        pairs = pick_split(pairs, "train")
    if not len(pairs):
        raise UsageError(f"{args.data}: no pairs to train on")
    val = None
    if args.val_fraction > 0 and args.objective != "diffmean":
        held = max(1, round(args.val_fraction * len(pairs)))
        if len(pairs) - held < 1:
            raise UsageError(
                f"{args.data} has {len(pairs)} training pair(s): too few to hold out a "
                "validation split; add pairs or pass --val-fraction 0"
            )
        pairs, val = pairs.split(test_size=held, seed=0)
    model, tokenizer = load_model(args.model)
    pairs = within_limits(args, pairs, model, tokenizer, include_suffix=False)
    if val is not None:
        val = within_limits(args, val, model, tokenizer, include_suffix=False)
    if not len(pairs):
        raise UsageError(f"{args.data}: every training pair is longer than the token limit")
    hparams = {
        "lr": args.lr,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "grad_accum": args.grad_accum,
        "multipliers": _multipliers(args.multipliers),
        "seed": args.seed,
        "rank": args.rank,
        "positions": args.positions,
        "lambda_n": args.lambda_n,
        "gamma": args.gamma,
        "theta": args.theta,
        "split_form": args.split_form,
        "reps_normalizer": args.reps_normalizer,
        "bidirectional": args.bidirectional,
        "checkpoint_every": args.checkpoint_every,
    }
    status = 0
    try:
        delta = train(
            model,
            tokenizer,
            pairs,
            kind=args.kind,
            objective=args.objective,
            layer=args.layer,
            site=args.site,
            preset=args.preset,
            val_pairs=val,
            checkpoint_dir=out / "checkpoint",
            resume=args.resume,
            method=args.method,
            progress=not args.no_progress,
            **hparams,
        )
    except TrainingDiverged as e:
        delta = e.delta
        delta.meta["diverged"] = str(e)
        print(f"unisteer: error: {e}")
        status = 2
    delta.meta["data"] = args.data
    skipped = unreadable + [str(x) for x in pairs.problems]
    skipped += [str(x) for x in val.problems] if val is not None else []
    if skipped:
        delta.meta["skipped"] = skipped
    save_delta(delta, out)
    log = {
        k: delta.meta.get(k)
        for k in ("objective", "hparams", "preset", "history", "validation", "diverged", "skipped")
    }
    write_text_atomic(out / "training_log.json", json.dumps(log, indent=1, default=str) + "\n")
    last = (delta.meta.get("history") or [{}])[-1].get("loss")
    val_loss = (delta.meta.get("validation") or [{}])[-1].get("loss")
    print(
        f"trained {delta.kind} / {args.objective} at {delta.site} on {len(pairs)} pairs"
        + (f": final loss {last:.4f}" if last is not None else "")
        + (f", validation loss {val_loss:.4f}" if val_loss is not None else "")
    )
    print(
        f"wrote {out / 'delta.safetensors'}, {out / 'delta.json'} and {out / 'training_log.json'}"
    )
    return status
