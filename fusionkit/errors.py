"""The one small exception hierarchy of fusionkit.

Every error a user can cause by passing bad data or bad configuration is a
``FusionkitError``; its message names the file, row, argument or value at fault.
"""
from __future__ import annotations


class FusionkitError(Exception):
    """Base class of every error fusionkit raises on purpose."""


class DataError(FusionkitError, ValueError):
    """A data file or folder is missing, unreadable or malformed."""


class ConfigError(FusionkitError, ValueError):
    """An unknown name, an unknown knob, or a combination of settings that cannot work."""


class InputError(FusionkitError, ValueError):
    """An array or argument passed to an evaluation function is invalid."""


class TrainingError(FusionkitError, RuntimeError):
    """Training diverged (NaN or inf loss) or cannot continue."""


class FusionkitWarning(UserWarning):
    """Something fusionkit did on the user's behalf, or a risk it was told to keep (e.g. ``dedup=False``)."""
