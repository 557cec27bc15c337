"""Errors of the curve-fitting layer.

Every message says what was wrong with the data or the fit and what to do about it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unisteer.errors import UnisteerError

if TYPE_CHECKING:
    from unisteer.fit.result import CurveFit


class FitError(UnisteerError):
    """The data cannot be fitted (flat, too few multipliers, NaNs, one sign of m, bad file)."""


class FitConvergenceError(FitError):
    """No start of the optimiser converged. ``result`` holds the best unconverged attempt."""

    def __init__(self, message: str, result: CurveFit) -> None:
        super().__init__(message)
        self.result = result
