"""The controller options shared by the subcommands that take multipliers (``sweep``,
``eval axbench``, ``eval accuracy``): ``--controller kl_budget --kappa 0.5 [--m-max --k]``.

Checked before any model loads; the library's :class:`unisteer.control.spec.ControlSpec` does
the work.
"""

from __future__ import annotations

import argparse
from typing import Any

from unisteer.errors import UsageError

CHOICES = ("fixed", "kl_budget", "static_kl")


def add_controller_options(p: Any, what: str) -> None:
    """``--controller``, ``--kappas`` (also spelt ``--kappa``), ``--m-max``, ``--k``; ``what``
    names the multiplier option that a fixed controller uses instead of ``--kappas``."""
    p.add_argument(
        "--controller",
        choices=CHOICES,
        default="fixed",
        help=f"fixed: one m per point ({what}); kl_budget: m_t chosen per token, the largest of "
        "--k candidates in [0, m_max] whose next-token KL to the unsteered model is <= kappa; "
        "static_kl: one m per kappa, calibrated on rollouts (95th percentile of per-token KL)",
    )
    p.add_argument(
        "--kappas", "--kappa", dest="kappas", help="KL budgets in nats (a comma list, inf allowed)"
    )
    p.add_argument("--m-max", type=float, help="the largest m (default: the delta's grid end)")
    p.add_argument("--k", type=int, default=8, help="kl_budget's candidate multipliers")


def controller_options(args: argparse.Namespace) -> tuple[Any, list[float]] | None:
    """``(ControlSpec, kappas)`` for a controller other than ``fixed``; ``None`` for fixed."""
    if args.controller == "fixed":
        if args.kappas is not None or args.m_max is not None:
            raise UsageError("--kappas and --m-max go with --controller kl_budget or static_kl")
        return None
    if args.kappas is None:
        raise UsageError(
            f"--controller {args.controller} needs --kappas (a comma list, inf allowed)"
        )
    try:
        values = [float(x) for x in args.kappas.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"argument --kappas: expected numbers, got {args.kappas!r}") from None
    from unisteer.control.spec import ControlSpec

    for flag, field, value in (("--m-max", "m_max", args.m_max), ("--k", "k", args.k)):
        try:  # the library's own checks, each named by its argument
            ControlSpec(args.controller, **{field: value})
        except ValueError as e:
            raise UsageError(f"argument {flag}: {e}") from None
    spec = ControlSpec(args.controller, m_max=args.m_max, k=args.k)
    try:
        return spec, spec.check_settings(values, "budgets")
    except ValueError as e:
        raise UsageError(f"argument --kappas: {e}") from None
