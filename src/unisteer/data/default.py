"""The project's own default dataset, written for unisteer and shipped with the package.

Four concepts, 160 pairs each, with a fixed 128/32 train/test split recorded per pair
(``meta["split"]``). Each pair is a user request and two answers giving the same content that
differ only in the concept:

* ``optimism``: hopeful, encouraging (positive) vs gloomy, pessimistic (negative);
* ``formality``: formal, polite register (positive) vs casual, chatty register (negative);
* ``pirate``: a stage pirate's speech (positive) vs plain modern English (negative);
* ``archaic``: Early Modern, King James English (positive) vs plain modern English (negative).

On the first two the unsteered default model already prefers the positive answer; on
``pirate`` and ``archaic`` it prefers the negative, which leaves steering room to show an
effect (``unisteer data inspect default --model smollm2-135m-instruct`` measures it; the
numbers are in ``docs/results.md``).

``pirate_multiturn`` (``default:pirate_multiturn``) holds 64 further pirate pairs whose
queries are conversations (user, assistant, user, ...; :mod:`unisteer.data.conversation`), all
marked ``test``: the held-out set of the multi-turn transfer experiment (``unisteer run
multiturn``). It is one of :data:`EXTRA_SETS`, not of :data:`DEFAULT_CONCEPTS`, so
``default`` (every concept) does not include it.
"""

from __future__ import annotations

from importlib import resources

from unisteer.data.pairs import PairSet
from unisteer.data.readers import read_jsonl
from unisteer.errors import DataError

DEFAULT_CONCEPTS: tuple[str, ...] = ("optimism", "formality", "pirate", "archaic")
EXTRA_SETS: tuple[str, ...] = ("pirate_multiturn",)  # test-only sets, read by name only


def default_dataset(concept: str | None = None) -> PairSet:
    """The default pairs of one concept, or of all concepts concatenated."""
    if concept is None:
        sets = [default_dataset(c) for c in DEFAULT_CONCEPTS]
        return sets[0].concat(*sets[1:])
    if concept not in DEFAULT_CONCEPTS + EXTRA_SETS:
        raise DataError(
            f"unknown default concept {concept!r}; the default dataset has {DEFAULT_CONCEPTS} "
            f"and the test-only sets {EXTRA_SETS}"
        )
    with resources.as_file(resources.files("unisteer.data") / "concepts" / f"{concept}.jsonl") as p:
        pairs = read_jsonl(p)
    pairs.name = concept
    return pairs


def default_split(concept: str | None = None) -> tuple[PairSet, PairSet]:
    """``(train, test)`` as fixed in the files: 128 and 32 pairs per concept."""
    return default_dataset(concept).fixed_split()
