"""Scoring with a controller: the teacher-forced log-likelihoods of A_p and A_n with ``m_t``
chosen at each completion token by the controller's rule (:mod:`unisteer.control.generate`'s
loop, fed the completion's tokens instead of sampling), so a controller gets PrefOdds and
UtilOdds (arXiv 2602.02343, Eqs. 1–3) like a fixed ``m`` does.

The tokens are the sweep's (:func:`unisteer.data.tokens.encode_pairs`: the same chat
template, completion span and suffix rule), so :func:`score_controlled` with
:func:`~unisteer.control.controllers.fixed` ``(m)`` gives the sweep's numbers at ``m`` (up to
the rounding of a token-by-token pass against one forward pass). Sweeping ``kappa`` instead
of ``m`` (:func:`sweep_kappa`) gives a preference–utility curve for an adaptive controller;
its table has the sweep's columns, with ``kappa`` in ``m``'s place and the mean ``m_t`` over
each pair's completion tokens beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from unisteer.control.calibrate import kl_profile
from unisteer.control.controllers import Controller
from unisteer.control.generate import _Run
from unisteer.control.spec import ControlSpec
from unisteer.core.positions import PositionMode
from unisteer.core.steering_set import Steerable
from unisteer.data.pairs import PolarityPair
from unisteer.data.tokens import encode_pairs, pad_id
from unisteer.model.config import context_length
from unisteer.scoring.table import make_table


def score_controlled(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PolarityPair],
    delta: Steerable,
    controller: Controller,
    *,
    positions: PositionMode = "all",
    include_suffix: bool = False,
    system_prompt: str | None = None,
    batch_size: int = 8,
) -> pd.DataFrame:
    """The sweep's table for ``pairs`` under ``controller`` (one row per pair; ``m`` holds
    NaN, ``mean_m`` the mean ``m_t`` over the completion tokens of A_p and A_n)."""
    encoded = encode_pairs(
        tokenizer, pairs, include_suffix=include_suffix, system_prompt=system_prompt,
        max_tokens=context_length(model),
    )  # fmt: skip
    rows: list[tuple[list[int], list[int]]] = []
    for pos, neg in encoded:
        for e in (pos, neg):
            end = len(e.input_ids) if include_suffix else e.completion_end
            rows.append(
                (list(e.input_ids[: e.prompt_length]), list(e.input_ids[e.prompt_length : end]))
            )
    runner = _Run(model, delta, controller, positions)
    pad = pad_id(tokenizer)
    nll = np.zeros(len(rows))
    counts = np.zeros(len(rows), dtype=np.int64)
    mean_m = np.zeros(len(rows))
    step = max(2, batch_size - batch_size % 2)  # A_p and A_n of a pair in one batch
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        gens = runner.run([p for p, _ in chunk], pad, set(), 0, None, forced=[c for _, c in chunk])
        for j, g in enumerate(gens):
            lp = g.logprob
            nll[start + j] = -float(np.sum(lp))
            counts[start + j] = len(lp)
            mean_m[start + j] = float(np.mean(g.m)) if g.m else 0.0
    table = make_table(
        [p.id for p in pairs], [float("nan")] * len(pairs), nll[0::2], nll[1::2],
        counts[0::2], counts[1::2],
    )  # fmt: skip
    table["mean_m"] = (mean_m[0::2] + mean_m[1::2]) / 2
    return table


def pairs_profile(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PolarityPair],
    delta: Steerable,
    spec: ControlSpec,
    *,
    positions: PositionMode = "all",
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``static_kl``'s KL profile from greedy rollouts of the pairs' distinct queries
    (:func:`unisteer.control.calibrate.kl_profile`, ``spec.points`` multipliers up to
    ``spec.m_max``, percentile ``spec.q``)."""
    if spec.m_max is None:
        raise ValueError("static_kl needs m_max")
    queries = list(dict.fromkeys(p.query for p in pairs))
    return kl_profile(model, tokenizer, queries, delta, spec.m_max, points=spec.points,
                      q=spec.q, positions=positions)  # fmt: skip


def sweep_controller(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PolarityPair],
    delta: Steerable,
    spec: ControlSpec,
    settings: Sequence[float],
    *,
    positions: PositionMode = "all",
    include_suffix: bool = False,
    progress: bool = True,
    profile: tuple[Sequence[float], Sequence[float]] | None = None,
) -> pd.DataFrame:
    """:func:`score_controlled` at every setting of ``spec`` (``m`` for ``fixed``, ``kappa``
    otherwise): one table in the sweep's layout with the setting's name as its column.
    ``static_kl`` is calibrated first, unless ``profile`` is given, on greedy rollouts of the
    pairs' queries (:func:`pairs_profile`)."""
    values = spec.check_settings(settings, spec.setting + "s")
    if profile is None and spec.needs_profile:
        profile = pairs_profile(model, tokenizer, pairs, delta, spec, positions=positions)
    tables = []
    for value in tqdm(values, desc=spec.setting, disable=not progress):
        t = score_controlled(model, tokenizer, pairs, delta, spec.at(value, profile),
                             positions=positions, include_suffix=include_suffix)  # fmt: skip
        t["m"] = float(value)
        tables.append(t)
    out = pd.concat(tables, ignore_index=True)
    return out if spec.setting == "m" else out.rename(columns={"m": spec.setting})


def sweep_kappa(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PolarityPair],
    delta: Steerable,
    kappas: Sequence[float],
    m_max: float,
    *,
    k: int = 8,
    positions: PositionMode = "all",
    include_suffix: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """:func:`sweep_controller` with ``kl_budget(kappa, m_max, k)`` for every ``kappa``: one
    table, ``kappa`` in the ``m`` column's place (the sweep's layout, so fits and plots read it)."""
    spec = ControlSpec("kl_budget", m_max=m_max, k=k)
    return sweep_controller(model, tokenizer, pairs, delta, spec, kappas, positions=positions,
                            include_suffix=include_suffix, progress=progress)  # fmt: skip
