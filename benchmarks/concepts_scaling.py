"""Many concepts on torchrun: the same multi-concept quick experiment on 1 and on N ranks.

Writes a small experiment over several concepts of the default dataset (the default model, the
quick profile's sizes, two cheap methods), runs it once as a plain ``unisteer run`` (the
baseline, one thread) and once as ``torchrun --nproc_per_node=N -m unisteer run`` (one thread
per rank), each into a fresh folder, and checks that both wrote the same numbers. The model
cache is warmed first, so neither run pays the one-time conversion.

    python benchmarks/concepts_scaling.py [--ranks 2] [--concepts optimism,archaic]

Ends with ``RESULT concepts_scaling <time of 1 rank / time of N ranks>`` (ideal: N, on a
machine with N free cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

EXPERIMENT = """\
name = "scaling"

[data]
source = [{sources}]
train_pairs = 4
test_pairs = 3
sweep_train_pairs = 3

[train]
epochs = 1

[sweep]
points = 7

[fit]
starts = 4

[report]
samples = 1
tokens = 16

[[method]]
kind = "vector"
objective = "diffmean"

[[method]]
kind = "vector"
objective = "sft"
"""


def numbers(value: Any, root: str) -> Any:
    if isinstance(value, dict):
        return {
            k: numbers(v, root)
            for k, v in value.items()
            if "seconds" not in k and k != "peak_memory_mb"
        }
    if isinstance(value, list):
        return [numbers(v, root) for v in value]
    return value.replace(root, "<out>") if isinstance(value, str) else value


def timed(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--concepts", default="optimism,archaic")
    args = ap.parse_args()
    import unisteer

    unisteer.load_model()  # the float32 cache exists before either run
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sources = ", ".join(f'"default:{c}"' for c in args.concepts.split(","))
        exp = root / "scaling.toml"
        exp.write_text(EXPERIMENT.format(sources=sources))
        run = ["-m", "unisteer", "run", str(exp), "--no-progress", "--out"]
        one = timed([sys.executable, *run, str(root / "one")], env)
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={args.ranks}"]  # fmt: skip
        many = timed([*torchrun, *run, str(root / "many")], env)
        same = numbers(json.loads((root / "one" / "results.json").read_text()), str(root / "one"))
        other = numbers(
            json.loads((root / "many" / "results.json").read_text()), str(root / "many")
        )
    n = len(args.concepts.split(","))
    print(f"{n} concepts x 2 methods, default model, quick sizes, 1 thread per process")
    print(f"1 process:        {one:7.1f} s")
    print(f"{args.ranks} torchrun ranks: {many:7.1f} s  (includes torchrun's start)")
    print(f"same results.json numbers: {same == other}")
    if same != other:
        sys.exit("the ranked run's numbers differ from the single process's")
    print(f"RESULT concepts_scaling {one / many:.3f}")


if __name__ == "__main__":
    main()
