"""Synthetic sweep tables from known curve parameters, for tests, demos and docs.

Each pair's PrefOdds and UtilOdds are the model curves plus a per-pair offset (spread
``pair_spread``) plus independent Gaussian noise (``noise``), all seeded. Losses are backed
out exactly so that the table is self-consistent (PrefOdds = L_n - L_p and
UtilOdds = logit(e^{-L_p} + e^{-L_n})):

    P_u = σ(UtilOdds),   L_p = -log P_u + log(1 + e^{-PrefOdds}),   L_n = L_p + PrefOdds
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import pandas as pd

from unisteer.fit.curves import PREFERENCE, UTILITY, continuous_m_neg


def synthetic_table(
    m: npt.ArrayLike,
    pref: Mapping[str, float],
    util: Mapping[str, float],
    *,
    n_pairs: int = 8,
    noise: float = 0.0,
    pair_spread: float = 0.0,
    seed: int = 0,
) -> pd.DataFrame:
    """A tidy sweep table (the columns of :func:`unisteer.scoring.sweep`) for known curves."""
    ms = np.asarray(m, dtype=np.float64).ravel()
    rng = np.random.default_rng(seed)
    pref_curve = PREFERENCE.value(ms, PREFERENCE.vector(dict(pref)))
    util_curve = UTILITY.value(ms, UTILITY.vector(dict(util)))
    frames = []
    for k in range(n_pairs):
        po = pref_curve + pair_spread * rng.normal() + noise * rng.normal(size=ms.size)
        uo = util_curve + pair_spread * rng.normal() + noise * rng.normal(size=ms.size)
        log_pu = -np.logaddexp(0.0, -uo)
        loss_pos = -log_pu + np.logaddexp(0.0, -po)
        frames.append(
            pd.DataFrame(
                {
                    "pair_id": f"p{k:03d}",
                    "m": ms,
                    "loss_pos": loss_pos,
                    "loss_neg": loss_pos + po,
                    "pref_odds": po,
                    "util_odds": uo,
                    "util_in_domain": np.ones(ms.size, dtype=bool),
                    "tokens_pos": 5,
                    "tokens_neg": 5,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _continuous(params: dict[str, float]) -> dict[str, float]:
    out = dict(params)
    out["m_neg"] = continuous_m_neg(
        out["m_pos"], out["L_pos"], out["p_pos"], out["L_neg"], out["p_neg"]
    )
    return out


#: An asymmetric preference curve on m ∈ [-30, 30]: linear near 0, a peak near m = 10 and a
#: trough near m = -6, converging on both sides (m_neg set for continuity at 0).
EXAMPLE_PREFERENCE: dict[str, float] = _continuous(
    {
        "alpha": 0.8,
        "beta": 1.0,
        "b": -0.5,
        "m_pos": 2.0,
        "L_pos": 100.0,
        "p_pos": 1.0,
        "L_neg": 60.0,
        "p_neg": 1.5,
    }
)
#: A utility curve peaking just right of 0 and decaying by about 4.5 nats at the ends.
EXAMPLE_UTILITY: dict[str, float] = _continuous(
    {"beta": 5.0, "b": -3.0, "m_pos": 1.0, "L_pos": 50.0, "p_pos": 0.8, "L_neg": 30.0, "p_neg": 1.2}
)
