"""Typed, immutable fit results.

A :class:`CurveFit` is one fitted curve (preference or utility); a :class:`SweepFit` pairs
the two fits of one sweep. Arrays inside are read-only and parameters sit in a read-only
mapping, so a result cannot be changed after the fact.

**Convergence.** The fitting functions raise :class:`~unisteer.fit.errors.FitConvergenceError`
when no start converged, unless called with ``strict=False``; then the result comes back with
``converged = False`` and the derived quantities (:mod:`unisteer.fit.derive`) refuse it.
Code that passes ``strict=False`` must check ``converged`` (or call :meth:`CurveFit.check`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from unisteer.fit.curves import Array, Kind, constraint_violation, decay_theta, model_for
from unisteer.fit.errors import FitConvergenceError, FitError


def r_squared(y: Array, predicted: Array) -> float:
    """R² = 1 - SS_res/SS_tot with SS_tot = Σ(y - ȳ)²; can be negative; NaN if y is flat."""
    ss_res = float(np.sum((y - predicted) ** 2))
    ss_tot = float(np.sum((y - np.mean(y)) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def _frozen(a: npt.ArrayLike) -> Array:
    out = np.array(a, dtype=np.float64)
    out.setflags(write=False)
    return out


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _pair_of_bools(value: Any) -> tuple[bool, bool]:
    if isinstance(value, list | tuple) and len(value) == 2:
        return bool(value[0]), bool(value[1])
    return False, False


@dataclass(frozen=True, eq=False)
class CurveFit:
    """One fitted curve and how it was obtained.

    ``m``, ``y`` are the points fitted (the mean curve, a pair's points, or the arrays given),
    ``sem`` their standard errors when known, ``residuals = y - fitted``. ``ci`` maps each
    parameter to a percentile bootstrap interval over pairs (level ``ci_level``) when requested.
    """

    kind: Kind
    params: Mapping[str, float]
    r2: float
    m: Array
    y: Array
    residuals: Array
    converged: bool
    status: int
    message: str
    constraint_violation: float
    n_points: int
    n_starts: int = 0
    n_converged_starts: int = 0
    seed: int = 0
    sem: Array | None = None
    n_pairs: int | None = None
    label: str = "curve"
    ci: Mapping[str, tuple[float, float]] | None = None
    ci_level: float | None = None
    n_bootstrap: int = 0
    n_bootstrap_converged: int = 0
    at_resolution: tuple[bool, bool] = (False, False)  # (m ≥ 0, m < 0) ended on the bound
    min_width: tuple[float, float] | None = None  # the bound: the grid spacing per side

    @property
    def unresolved(self) -> bool:
        """The data pull this fit's decay narrower than the grid resolves (on some side):
        flagged in every table; more points there would tell what the curve does."""
        return any(self.at_resolution)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "params", MappingProxyType({k: float(v) for k, v in self.params.items()}))
        for name in ("m", "y", "residuals"):
            set_(self, name, _frozen(getattr(self, name)))
        if self.sem is not None:
            set_(self, "sem", _frozen(self.sem))
        if self.ci is not None:
            set_(self, "ci", MappingProxyType(dict(self.ci)))

    # -- evaluation ---------------------------------------------------------------------------

    @property
    def theta(self) -> Array:
        """Parameters as a vector in the model's name order."""
        return model_for(self.kind).vector(dict(self.params))

    @property
    def decay_params(self) -> Array:
        """(m_pos, L_pos, p_pos, m_neg, L_neg, p_neg)."""
        model = model_for(self.kind)
        return model.decay_part(self.theta)

    @property
    def m_range(self) -> tuple[float, float]:
        """The smallest and largest multiplier that was fitted."""
        return float(np.min(self.m)), float(np.max(self.m))

    def predict(self, m: npt.ArrayLike) -> Array:
        """The fitted curve at ``m`` (PrefOdds or UtilOdds)."""
        x = np.asarray(m, dtype=np.float64)
        flat = model_for(self.kind).value(np.atleast_1d(x).ravel(), self.theta)
        return flat.reshape(x.shape)

    def decay(self, m: npt.ArrayLike) -> Array:
        """The fitted validity decay D(m) of this curve."""
        x = np.asarray(m, dtype=np.float64)
        return decay_theta(np.atleast_1d(x).ravel(), self.decay_params).reshape(x.shape)

    def r2_on(self, m: npt.ArrayLike, y: npt.ArrayLike) -> float:
        """R² of these parameters on other points (e.g. train → test)."""
        yy = np.asarray(y, dtype=np.float64)
        return r_squared(yy, self.predict(m))

    def check(self) -> CurveFit:
        """Return self if converged, else raise :class:`FitConvergenceError`."""
        if not self.converged:
            raise FitConvergenceError(
                f"{self.label}: the {self.kind} fit did not converge ({self.message}); "
                "try more starts (n_starts), another seed, or check the data for outliers",
                self,
            )
        return self

    # -- serialisation ------------------------------------------------------------------------

    def to_dict(self, *, points: bool = True) -> dict[str, Any]:
        """JSON-ready summary (non-finite numbers become None)."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "label": self.label,
            "params": {k: _finite(v) for k, v in self.params.items()},
            "r2": _finite(self.r2),
            "converged": self.converged,
            "status": self.status,
            "message": self.message,
            "constraint_violation": _finite(self.constraint_violation),
            "n_points": self.n_points,
            "n_pairs": self.n_pairs,
            "n_starts": self.n_starts,
            "n_converged_starts": self.n_converged_starts,
            "seed": self.seed,
            "m_range": list(self.m_range),
            "at_resolution": list(self.at_resolution),
            "min_width": None if self.min_width is None else list(self.min_width),
        }
        if self.ci is not None:
            out["ci"] = {k: [_finite(lo), _finite(hi)] for k, (lo, hi) in self.ci.items()}
            out["ci_level"] = self.ci_level
            out["n_bootstrap"] = self.n_bootstrap
            out["n_bootstrap_converged"] = self.n_bootstrap_converged
        if points:
            out["m"] = [float(v) for v in self.m]
            out["y"] = [float(v) for v in self.y]
            out["residuals"] = [float(v) for v in self.residuals]
            if self.sem is not None:
                out["sem"] = [_finite(v) for v in self.sem]
        return out

    @classmethod
    def from_params(
        cls,
        kind: Kind,
        params: Mapping[str, float],
        m: npt.ArrayLike,
        y: npt.ArrayLike | None = None,
        *,
        label: str = "given parameters",
    ) -> CurveFit:
        """A fit object from known parameters (e.g. read back from ``fits.json``).

        ``m`` gives the multipliers the curve is meant for (its range bounds the search of
        :func:`~unisteer.fit.derive.choose_multiplier`). Without ``y`` the curve is used as
        its own data (residuals 0, R² 1). It counts as converged only if D is continuous at 0.
        """
        model = model_for(kind)
        theta = model.vector(dict(params))
        mm = np.asarray(m, dtype=np.float64).ravel()
        fitted = model.value(mm, theta)
        yy = fitted if y is None else np.asarray(y, dtype=np.float64).ravel()
        if yy.shape != mm.shape:
            raise FitError(f"{label}: m and y differ in length ({mm.size} and {yy.size})")
        violation = constraint_violation(model.decay_part(theta))
        ok = violation < 1e-6
        return cls(
            kind=kind,
            params=dict(zip(model.names, theta.tolist(), strict=True)),
            r2=r_squared(yy, fitted),
            m=mm,
            y=yy,
            residuals=yy - fitted,
            converged=ok,
            status=0 if ok else -1,
            message="given parameters" if ok else "given parameters are discontinuous at m = 0",
            constraint_violation=violation,
            n_points=int(mm.size),
            label=label,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CurveFit:
        """Rebuild a fit from :meth:`to_dict` output (which must include the points)."""
        kind = cast(Kind, data["kind"])
        ci = data.get("ci")
        return cls(
            kind=kind,
            params={k: float(v) for k, v in data["params"].items()},
            r2=float("nan") if data.get("r2") is None else float(data["r2"]),
            m=np.asarray(data["m"], dtype=np.float64),
            y=np.asarray(data["y"], dtype=np.float64),
            residuals=np.asarray(data["residuals"], dtype=np.float64),
            converged=bool(data["converged"]),
            status=int(data["status"]),
            message=str(data["message"]),
            constraint_violation=float(data["constraint_violation"] or 0.0),
            n_points=int(data["n_points"]),
            n_starts=int(data.get("n_starts", 0)),
            n_converged_starts=int(data.get("n_converged_starts", 0)),
            seed=int(data.get("seed", 0)),
            sem=None
            if data.get("sem") is None
            else np.array([np.nan if v is None else v for v in data["sem"]], dtype=np.float64),
            n_pairs=data.get("n_pairs"),
            label=str(data.get("label", "curve")),
            ci=None if ci is None else {k: (float(v[0]), float(v[1])) for k, v in ci.items()},
            ci_level=data.get("ci_level"),
            n_bootstrap=int(data.get("n_bootstrap", 0)),
            n_bootstrap_converged=int(data.get("n_bootstrap_converged", 0)),
            at_resolution=_pair_of_bools(data.get("at_resolution")),
            min_width=None
            if data.get("min_width") is None
            else (float(data["min_width"][0]), float(data["min_width"][1])),
        )


@dataclass(frozen=True, eq=False)
class SweepFit:
    """The preference and utility fits of one sweep (one steering method)."""

    preference: CurveFit
    utility: CurveFit

    @property
    def converged(self) -> bool:
        return self.preference.converged and self.utility.converged

    @property
    def m_range(self) -> tuple[float, float]:
        """The multipliers covered by both fits."""
        lo_p, hi_p = self.preference.m_range
        lo_u, hi_u = self.utility.m_range
        return max(lo_p, lo_u), min(hi_p, hi_u)

    def to_dict(self, *, points: bool = True) -> dict[str, Any]:
        return {
            "preference": self.preference.to_dict(points=points),
            "utility": self.utility.to_dict(points=points),
        }


@dataclass(frozen=True, eq=False)
class PairFits:
    """Per-pair fits of one curve kind; ``errors`` maps pair ids that could not be fitted
    (degenerate data) to the reason. Non-converged fits sit in ``fits`` with ``converged``
    False."""

    kind: Kind
    fits: Mapping[str, CurveFit]
    errors: Mapping[str, str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "fits", MappingProxyType(dict(self.fits)))
        object.__setattr__(self, "errors", MappingProxyType(dict(self.errors)))

    @property
    def r2(self) -> dict[str, float]:
        """R² per converged pair."""
        return {k: f.r2 for k, f in self.fits.items() if f.converged}

    def to_dict(self, *, points: bool = False) -> dict[str, Any]:
        r2 = np.array(list(self.r2.values()), dtype=np.float64)
        return {
            "kind": self.kind,
            "n_pairs": len(self.fits) + len(self.errors),
            "n_converged": int(r2.size),
            "r2_median": _finite(float(np.median(r2))) if r2.size else None,
            "fits": {k: f.to_dict(points=points) for k, f in self.fits.items()},
            "errors": dict(self.errors),
        }
