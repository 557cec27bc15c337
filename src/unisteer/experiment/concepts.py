"""The concepts of an experiment: one per data source, or one per concept of an AxBench file.

An experiment over several concepts is concepts × methods: each concept is the same
experiment on its own data, with its own stages in ``<output>/concepts/<name>/`` (so each
concept resumes, and reports, on its own), and the top folder aggregates them
(:mod:`unisteer.report.concepts`). An experiment with one concept keeps the one-folder layout.

Concepts are known before the model loads (an AxBench file's concept ids are read from its
table), so a run on several processes can split them up front
(:mod:`unisteer.experiment.distributed`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from unisteer.experiment.config import Experiment, ExperimentError


@dataclass(frozen=True)
class Concept:
    """One concept of an experiment: its data ``source`` (and, for an AxBench file, the
    ``concept_id`` within it), named for folders and tables."""

    name: str
    source: str
    concept_id: int | None = None


def _name_of(source: str) -> str:
    if source == "default" or source.startswith("default:"):
        return source.partition(":")[2] or "default"
    path = Path(source)
    name = path.stem if path.is_file() else path.name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "data"


def axbench_concept_ids(source: str) -> list[int]:
    """The concept ids of an AxBench table (its positive rows), in order."""
    from unisteer.data.axbench import read_axbench_frame

    frame = read_axbench_frame(source)
    ids = frame.loc[frame["category"] == "positive", "concept_id"]
    return sorted({int(i) for i in ids if int(i) >= 0})


def concepts_of(exp: Experiment) -> list[Concept]:
    """The experiment's concepts, in the order of its sources (an AxBench file's in id order,
    or in the order ``[data] concepts`` lists them). Names are unique: a repeated one gets
    ``-2``, ``-3``..."""
    sources = exp.sources or (exp.data,)
    found: list[Concept] = []
    for source in sources:
        if exp.data_format == "axbench":
            ids = axbench_concept_ids(source)
            if exp.concept_ids is not None:
                missing = sorted(set(exp.concept_ids) - set(ids))
                if missing:
                    raise ExperimentError(
                        f"{exp.source}: [data] concepts {missing} are not in {source} "
                        f"(it has {len(ids)} concepts: {ids[:8]}{'...' if len(ids) > 8 else ''})"
                    )
                ids = list(exp.concept_ids)
            stem = _name_of(source)
            found.extend(Concept(f"{stem}-{i}", source, i) for i in ids)
        else:
            found.append(Concept(_name_of(source), source))
    seen: dict[str, int] = {}
    named = []
    for c in found:
        seen[c.name] = seen.get(c.name, 0) + 1
        name = c.name if seen[c.name] == 1 else f"{c.name}-{seen[c.name]}"
        named.append(Concept(name, c.source, c.concept_id))
    return named


def for_concept(exp: Experiment, concept: Concept) -> Experiment:
    """``exp`` on ``concept``'s data alone: what runs in its folder."""
    return exp.replace(
        name=f"{exp.name}-{concept.name}",
        data=concept.source,
        sources=(),
        concept_ids=None,
        concept_id=concept.concept_id,
    )


CONCEPTS_DIR = "concepts"


def concept_dir(out: Path, concept: Concept) -> Path:
    """Where ``concept``'s stages and report live inside the experiment's folder."""
    return out / CONCEPTS_DIR / concept.name
