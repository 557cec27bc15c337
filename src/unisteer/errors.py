"""Exceptions raised by unisteer. Every message says what was wrong and what to do."""

from __future__ import annotations


class UnisteerError(Exception):
    """Base class for every error unisteer raises on purpose."""


class SiteError(UnisteerError):
    """A site could not be found in a model, or does not fit a delta."""


class DeltaLoadError(UnisteerError):
    """A saved delta is unreadable, unsafe, or does not fit the model it is loaded into."""


class ModelLoadError(UnisteerError):
    """A model could not be loaded; the message says what to install or run."""


class PlacementError(ModelLoadError):
    """The arguments placing a model on devices contradict each other (``device`` and
    ``device_map`` both given, ``"disk"`` without ``offload_folder``, ...)."""


class SteeringError(UnisteerError):
    """A multiplier, position mask or prompt length does not fit the batch being run."""


class DataError(UnisteerError):
    """A data file or row is unusable. The message names the file, the line and the field."""


class UsageError(UnisteerError):
    """A command-line argument is invalid; the message names it."""
