"""Run the architecture matrix's tests and write the README's table from their results.

    python scripts/architecture_table.py            # runs the tests (~2 min), rewrites README.md
    python scripts/architecture_table.py --check    # exit 1 when README.md's table is stale

Each column is one parametrized test over ``tests/tiny_models.py``'s ``ARCHS``; a cell counts
the cases of that test for that architecture that passed. Nothing in the table is written by
hand: change a test or an architecture and run this again.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START = "<!-- architecture-table:start (scripts/architecture_table.py writes this) -->"
END = "<!-- architecture-table:end -->"

#: (column, test node ids): a cell is the passed / run cases of those tests for one arch.
COLUMNS: list[tuple[str, list[str]]] = [
    (
        "sites found",
        [
            "tests/core/test_sites.py::test_blocks_and_down_proj_found_by_structure",
            "tests/core/test_sites.py::test_mixture_of_experts_sites_are_listed_never_guessed",
        ],
    ),
    (
        "m = 0 bit-exact",
        ["tests/core/test_steer.py::test_zero_multiplier_is_bit_exact_and_nonzero_steers"],
    ),
    ("fast sweep = naive", ["tests/scoring/test_sweep.py::test_fast_sweep_equals_naive"]),
    (
        "cached training = naive",
        ["tests/training/test_trainer.py::test_cached_loss_and_gradient_equal_naive"],
    ),
    (
        "KV-cache positions",
        [
            "tests/core/test_kv_cache_positions.py::"
            "test_cached_generate_matches_uncached_loop_on_every_architecture"
        ],
    ),
    ("model unchanged", ["tests/test_architectures.py::test_state_dict_unchanged_by_everything"]),
    (
        "bfloat16 fast paths",
        ["tests/test_architectures.py::test_half_precision_takes_the_fast_paths"],
    ),
]


def archs() -> tuple[str, ...]:
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import ARCHS, MOE

    return tuple(ARCHS), tuple(MOE)  # type: ignore[return-value]


def run_tests(junit: Path) -> None:
    nodes = [n for _, ids in COLUMNS for n in ids]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"]
    subprocess.run([*cmd, *nodes], cwd=ROOT, check=False)


def results(junit: Path, known: tuple[str, ...]) -> dict[tuple[str, str], list[bool]]:
    """``(test function, arch) -> [passed?]`` for every case in the JUnit report."""
    out: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "")
        func, _, params = name.partition("[")
        arch = next((p for p in params.rstrip("]").split("-") if p in known), None)
        if arch is None:
            continue
        failed = any(child.tag in ("failure", "error") for child in case)
        skipped = any(child.tag == "skipped" for child in case)
        if not skipped:
            out[(func, arch)].append(not failed)
    return out


def table(
    found: dict[tuple[str, str], list[bool]], names: tuple[str, ...], moe: tuple[str, ...]
) -> str:
    import torch
    import transformers

    head = ["architecture", *(c for c, _ in COLUMNS)]
    lines = [
        f"Tiny random models built from configs, float32 unless the column says otherwise "
        f"(torch {torch.__version__}, transformers {transformers.__version__}); a cell is the "
        "cases that passed. Mixtures of experts have no default down projection: their sites "
        "are named explicitly (the error lists them), LoRA and local weights go on the fused "
        "experts.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for arch in names:
        cells = [f"`{arch}`" + (" (MoE)" if arch in moe else "")]
        for _, ids in COLUMNS:
            runs = [ok for node in ids for ok in found.get((node.split("::")[1], arch), [])]
            if not runs:
                cells.append("–")
            elif all(runs):
                cells.append(f"✓ {len(runs)}/{len(runs)}")
            else:
                cells.append(f"✗ {sum(runs)}/{len(runs)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rewrite(text: str, body: str) -> str:
    if START not in text or END not in text:
        raise SystemExit(f"{README}: the markers {START!r} and {END!r} are missing")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{body}\n{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether README is stale")
    args = parser.parse_args()
    names, moe = archs()
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        run_tests(junit)
        body = table(results(junit, names), names, moe)
    text = README.read_text()
    new = rewrite(text, body)
    if args.check:
        stale = new != text
        print("README.md's architecture table is " + ("stale" if stale else "current"))
        return 1 if stale else 0
    README.write_text(new)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
