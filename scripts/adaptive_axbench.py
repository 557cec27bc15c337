"""The AxBench protocol (offline proxy judge) under a fixed multiplier, a static KL calibration
and the adaptive ``kl_budget`` controller (issue 19; arXiv 2602.02343 §7, open question 3).

For each AxBench concept and each of a DiffMean and a SPLIT vector (trained as in
``scripts/axbench_evidence.py``: 24 pairs of the concept's response against the default
model's own answer, middle layer), the protocol is run three times, one method name each:

* ``fixed``: factors ``m`` = ``m_max`` × {1/4, 1/2, 3/4, 1}, ``m_max`` the end of the delta's
  recorded grid (DiffMean: 3 × its natural unit; SPLIT: 1.5 × its largest training
  multiplier);
* ``static_kl``: factors ``kappa``, each turned into one constant ``m`` by the KL profile of
  greedy rollouts of the concept's *selection* instructions (``m_max``, 9 points, p95);
* ``kl_budget``: factors ``kappa`` (three of them: each costs K + 1 rows per prompt),
  ``m_t`` chosen token by token among K candidates in ``[0, m_max]``;

plus the unsteered model. Each controller's setting is chosen per concept on
instructions 0–4 and reported on 5–9 (128 new tokens, temperature 1, top-k 50). Writes OUT
(generations, ratings, summaries) and ``OUT/adaptive_axbench.md`` (the table for
docs/results.md). About 45 minutes on 2 cores::

    python scripts/adaptive_axbench.py --out unisteer-out/adaptive-axbench [--concepts 0,2]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import pandas as pd
from axbench_evidence import CONCEPTS, concept_delta

import unisteer
from unisteer.control.spec import ControlSpec
from unisteer.evaluate import eval_axbench, make_judge
from unisteer.evaluate.axbench.store import EvalStore

KAPPAS = [0.1, 0.3, 1.0, 3.0]  # static_kl's settings
KL_KAPPAS = [0.1, 0.5, 3.0]  # kl_budget's: three, for time (each costs K + 1 rows per prompt)
FRACTIONS = [0.25, 0.5, 0.75, 1.0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=CONCEPTS)
    ap.add_argument("--concepts", default="0,2")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=10)
    args = ap.parse_args()
    ids = [int(x) for x in args.concepts.split(",")]
    model, tok = unisteer.load_model()
    judge = make_judge(
        "proxy", concepts_path=args.data / "generate", model=model, tokenizer=tok, concept_ids=ids
    )
    t0 = time.perf_counter()
    where = args.out / "axbench"
    common = {"concept_ids": ids, "batch_size": args.batch_size, "progress": True}
    unsteered = eval_axbench(
        model, tok, args.data / "generate", None, judge, [0.0], where, method="unsteered",
        **common,
    )  # fmt: skip
    assert unsteered is not None
    specs = {
        "fixed": ControlSpec("fixed"),
        "static_kl": ControlSpec("static_kl"),  # m_max: each delta's grid end
        "kl_budget": ControlSpec("kl_budget", k=args.k),
    }
    for objective in ("diffmean", "split"):
        for cid in ids:
            path = args.out / "deltas" / objective / str(cid)
            concept_delta(model, tok, args.data, path, cid, objective)
            m_max = max(float(x) for x in unisteer.load_delta(path, model).meta["grid"])
            for name, spec in specs.items():
                grid = {"fixed": [m_max * f for f in FRACTIONS], "static_kl": KAPPAS,
                        "kl_budget": KL_KAPPAS}[name]  # fmt: skip
                report = eval_axbench(
                    model, tok, args.data / "generate", {str(cid): path}, judge, grid, where,
                    method=f"{objective}-{name}", controller=spec, **common,
                )  # fmt: skip
                assert report is not None
                print(f"concept {cid} {objective}-{name} (m_max {m_max:.2f}) done "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
    report = eval_axbench(
        model, tok, args.data / "generate", None, judge, [0.0], where, method="unsteered",
        baseline="unsteered", **common,
    )  # fmt: skip
    assert report is not None
    print(report.format())
    write_table(report.selected, report.summary, EvalStore(where), args.out, ids)
    print(f"total {time.perf_counter() - t0:.0f} s")


def write_table(
    selected: pd.DataFrame, summary: pd.DataFrame, store: EvalStore, out: Path, ids: list[int]
) -> None:
    """``OUT/adaptive_axbench.md``: per method the report-split proxy scores at the chosen
    setting, the settings chosen per concept and the mean m of the reported generations."""
    gens = store.generations()
    lines = [
        "| method | controller | proxy concept | proxy HM | proxy instruction | proxy fluency "
        "| selection HM (0–4) | chosen setting per concept | mean m (report) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary.itertuples(index=False):
        method = str(r.method)
        chosen = selected[selected["method"] == method].set_index("concept_id")["factor"]
        picked = gens[(gens["method"] == method) & (gens["split"] == "report")]
        picked = picked[
            [
                chosen.get(c) == f
                for c, f in zip(picked["concept_id"], picked["factor"], strict=True)
            ]
        ]
        mean_m = float(picked["m_mean"].mean()) if "m_mean" in picked and len(picked) else math.nan
        setting = " / ".join(f"{chosen.get(c, math.nan):g}" for c in ids)
        controller = method.split("-", 1)[1] if "-" in method else "none"
        lines.append(
            f"| {method} | {controller} | {r.proxy_concept_score:.2f} | {r.proxy_hm:.2f} | "
            f"{r.proxy_instruction_score:.2f} | {r.proxy_fluency_score:.2f} | "
            f"{r.proxy_select_hm:.2f} | {setting} | {mean_m:.2f} |"
        )
    (out / "adaptive_axbench.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
