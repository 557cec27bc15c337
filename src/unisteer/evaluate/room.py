"""Room to steer: how the unsteered model already scores a concept's pairs.

A concept on which the base model already prefers A_p (PrefOdds(0) > 0, accuracy near 1) leaves
steering little to gain, and RePS's suppression term then dominates its loss. This measures, per
concept and split, the mean PrefOdds and UtilOdds at m = 0 and the accuracy
(the fraction with PrefOdds > 0; arXiv 2602.02343, Eq. 5-6 for the two log-odds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from unisteer.data.pairs import PolarityPair
from unisteer.scoring.sweep import score_pairs


@dataclass(frozen=True)
class BaseScores:
    """One concept's (and split's) unsteered scores."""

    concept: str
    split: str
    n: int
    pref_odds: float  # mean PrefOdds at m = 0
    util_odds: float  # mean UtilOdds at m = 0 over the pairs where it is defined
    accuracy: float  # fraction of pairs with PrefOdds > 0

    @property
    def room(self) -> bool:
        """The project's bar for a concept with room to steer: the base model prefers the
        negative on average (mean PrefOdds < 0) and the positive on at most 30% of pairs."""
        return self.pref_odds < 0 and self.accuracy <= 0.3


def base_scores(
    model: Any, tokenizer: Any, pairs: Sequence[PolarityPair], **kwargs: Any
) -> list[BaseScores]:
    """Unsteered scores of ``pairs`` grouped by ``meta["concept"]`` and ``meta["split"]`` (and
    over all splits of a concept when it has more than one). ``kwargs`` go to
    :func:`unisteer.scoring.score_pairs`."""
    if not pairs:
        raise ValueError("no pairs to score")
    table = score_pairs(model, tokenizer, pairs, **kwargs)
    by_id = {p.id: p for p in pairs}
    table = table.assign(
        concept=[str(by_id[i].meta.get("concept", "-")) for i in table["pair_id"]],
        split=[str(by_id[i].meta.get("split", "all")) for i in table["pair_id"]],
    )
    out = []
    for concept, group in table.groupby("concept", sort=True):
        parts = [(str(s), g) for s, g in group.groupby("split", sort=True)]
        if len(parts) > 1:
            parts.append(("all", group))
        for split, g in parts:
            util = g["util_odds"].to_numpy(dtype=np.float64)
            util = util[np.isfinite(util)]
            out.append(
                BaseScores(
                    concept=str(concept),
                    split=split,
                    n=len(g),
                    pref_odds=float(g["pref_odds"].mean()),
                    util_odds=float(util.mean()) if util.size else float("nan"),
                    accuracy=float((g["pref_odds"] > 0).mean()),
                )
            )
    return out


def format_base_scores(rows: Sequence[BaseScores], model_name: str) -> str:
    """The table ``unisteer data inspect --model`` prints."""
    lines = [
        f"unsteered {model_name} (m = 0): room to steer when mean PrefOdds < 0 and accuracy <= 0.3",
        f"  {'concept':<14} {'split':<6} {'n':>4} {'PrefOdds':>9} {'UtilOdds':>9} "
        f"{'accuracy':>8}  room",
    ]
    for r in rows:
        lines.append(
            f"  {r.concept:<14} {r.split:<6} {r.n:>4} {r.pref_odds:>9.2f} {r.util_odds:>9.2f} "
            f"{r.accuracy:>8.2f}  {'yes' if r.room else 'no'}"
        )
    return "\n".join(lines)
