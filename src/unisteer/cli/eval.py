"""``unisteer eval axbench`` and ``unisteer eval accuracy``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from unisteer.cli.control import add_controller_options, controller_options
from unisteer.cli.data import add_source_options, load_source, pick_split
from unisteer.errors import UsageError


def _grid(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    from unisteer.scoring.grid import parse_grid

    try:
        return parse_grid(text)
    except ValueError as e:
        raise UsageError(f"argument {what}: {e}") from None


def register(sub: Any) -> None:
    from unisteer.model import DEFAULT_MODEL

    ev = sub.add_parser("eval", help="evaluate deltas: AxBench generation, or pair accuracy")
    ev_sub = ev.add_subparsers(dest="eval_command", required=True)

    ax = ev_sub.add_parser(
        "axbench", help="steered generation on AlpacaEval instructions, rated by a judge"
    )
    ax.add_argument("--model", default=DEFAULT_MODEL)
    ax.add_argument("--concepts", required=True, help="AxBench concept data (a folder)")
    ax.add_argument("--deltas", nargs="*", default=None, help="saved deltas, one per concept")
    ax.add_argument("--out", type=Path, required=True)
    ax.add_argument("--concept-ids", help="comma list of concept ids (default: all)")
    ax.add_argument("--method", default=None, help="name stored with the generations")
    ax.add_argument("--baseline", help="a stored method to compute the winrate against")
    ax.add_argument("--factors", help="LO:HI:N or a comma list (default: per delta kind)")
    add_controller_options(ax, "--factors")
    ax.add_argument("--instructions", type=Path, help="AlpacaEval instructions (JSON)")
    ax.add_argument("--max-new-tokens", type=int, default=128)
    ax.add_argument("--temperature", type=float, default=1.0)
    ax.add_argument("--top-p", type=float, default=1.0)
    ax.add_argument("--top-k", type=int, default=50)
    ax.add_argument("--seed", type=int, default=42)
    ax.add_argument("--batch-size", type=int, default=16)
    ax.add_argument("--judge", choices=["proxy", "http", "local", "none"], default="proxy")
    ax.add_argument("--rescore", action="store_true", help="rate stored generations only")
    ax.add_argument("--judge-model", help="HTTP model name, or a local model for --judge local")
    ax.add_argument("--base-url", help="OpenAI-compatible endpoint (default: OpenAI's)")
    ax.add_argument("--judge-temperature", type=float, default=0.0)
    ax.add_argument("--api-key-env", default="OPENAI_API_KEY")
    ax.add_argument("--concurrency", type=int, default=4)
    ax.add_argument("--timeout", type=float, default=60.0)
    ax.add_argument("--max-retries", type=int, default=3)
    ax.add_argument("--judge-cache", type=Path)
    ax.add_argument("--embeddings", choices=["auto", "minilm", "tfidf"], default="auto")
    ax.add_argument("--no-proxy-nll", action="store_true", help="proxy fluency without NLL")
    ax.add_argument("--no-progress", action="store_true")
    ax.set_defaults(func=axbench)

    acc = ev_sub.add_parser(
        "accuracy", help="fraction of pairs whose steered model prefers A_p, per delta and m"
    )
    acc.add_argument("--model", default=DEFAULT_MODEL)
    acc.add_argument("--data", required=True, help="a data file or default[:CONCEPT]")
    add_source_options(acc)
    acc.add_argument("--split", choices=["all", "train", "test"], default="all")
    acc.add_argument("--deltas", nargs="*", default=[], help="saved delta directories")
    acc.add_argument("--base", action="store_true", help="also score the unsteered model")
    acc.add_argument("--ms", help="LO:HI:N or a comma list (a fixed m)")
    add_controller_options(acc, "--ms")
    acc.add_argument("--out", type=Path, required=True)
    acc.add_argument("--reduction", choices=["sum", "mean"], default="sum")
    acc.add_argument("--include-suffix", action="store_true")
    acc.add_argument("--positions", choices=["all", "prompt", "completion"], default="all")
    acc.add_argument("--no-progress", action="store_true")
    acc.set_defaults(func=accuracy)


def axbench(args: argparse.Namespace) -> int:
    from unisteer.evaluate.axbench.job import delta_dirs_by_concept, eval_axbench
    from unisteer.evaluate.axbench.protocol import AxBenchSettings
    from unisteer.evaluate.axbench.run import AxBenchReport, rescore
    from unisteer.evaluate.judges.select import make_judge
    from unisteer.model.load import load_model

    control = controller_options(args)
    factors = _grid(args.factors, "--factors")
    if control is not None:
        if factors is not None:
            raise UsageError(f"--controller {args.controller} takes --kappas, not --factors")
        if args.rescore:
            raise UsageError("--rescore rates stored generations; it takes no --controller")
        factors = control[1]
    model, tokenizer = load_model(args.model)
    ids = [int(x) for x in args.concept_ids.split(",")] if args.concept_ids else None
    judge = None
    if args.judge != "none":
        judge = make_judge(
            args.judge,
            concepts_path=args.concepts,
            model=model,
            tokenizer=tokenizer,
            judge_model=args.judge_model,
            base_url=args.base_url,
            temperature=args.judge_temperature,
            api_key_env=args.api_key_env,
            concurrency=args.concurrency,
            timeout=args.timeout,
            max_retries=args.max_retries,
            cache_dir=args.judge_cache,
            embeddings=args.embeddings,
            proxy_nll=not args.no_proxy_nll,
            concept_ids=ids,
        )
    report: AxBenchReport | None
    if args.rescore:
        if judge is None:
            raise UsageError("--rescore needs a judge")
        report = rescore(args.out, judge, baseline=args.baseline, progress=not args.no_progress)
    else:
        deltas = delta_dirs_by_concept(args.deltas) if args.deltas else None
        settings = AxBenchSettings(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            seed=args.seed,
        )
        report = eval_axbench(
            model,
            tokenizer,
            args.concepts,
            deltas,
            judge,
            factors,
            args.out,
            instructions=args.instructions,
            concept_ids=ids,
            method=args.method or ("steered" if deltas else "unsteered"),
            baseline=args.baseline,
            settings=settings,
            batch_size=args.batch_size,
            progress=not args.no_progress,
            controller=control[0] if control is not None else None,
        )
    if report is not None:
        print(report.format())
    print(f"wrote {args.out}")
    return 0


def accuracy(args: argparse.Namespace) -> int:
    from unisteer.evaluate.accuracy import eval_accuracy
    from unisteer.model.load import load_model

    control = controller_options(args)
    ms = _grid(args.ms, "--ms")
    if control is not None:
        if ms is not None:
            raise UsageError(f"--controller {args.controller} takes --kappas, not --ms")
        if not args.deltas:
            raise UsageError(f"--controller {args.controller} steers saved --deltas; give some")
        ms = control[1]
    elif ms is None:
        raise UsageError("the following arguments are required: --ms (or --controller)")
    model, tokenizer = load_model(args.model)
    pairs = pick_split(load_source(args, args.data), args.split)
    deltas: dict[str, Any] = {Path(d).name: Path(d) for d in args.deltas}
    if args.base or not deltas:
        deltas["base"] = None
    table = eval_accuracy(
        model,
        tokenizer,
        pairs,
        deltas,
        ms,
        args.out,
        progress=not args.no_progress,
        reduction=args.reduction,
        include_suffix=args.include_suffix,
        positions=args.positions,
        controller=control[0] if control is not None else None,
    )
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"wrote {args.out}")
    return 0
