"""The one exception hierarchy of autotune."""

from __future__ import annotations


class AutotuneError(Exception):
    """Base class of every error autotune raises on purpose."""


class UsageError(AutotuneError):
    """Raised for bad command-line input or configuration (exit code 2)."""


class SpecError(UsageError):
    """Raised when a study file is missing, unreadable or invalid."""


class StorageError(UsageError):
    """Raised when a storage URL is malformed or names an unsupported backend."""


class DefinitionMismatch(UsageError):
    """Raised when resuming a study whose stored definition differs from this run's."""


class DataError(AutotuneError):
    """Raised when a dataset cannot be found, read or downloaded."""


class Diverged(AutotuneError):
    """Raised by training when the loss becomes NaN or infinite; fails that trial only."""


class UserCodeError(AutotuneError):
    """Raised when the user's own code (a model's build or forward) fails inside a trial;
    fails that trial, with the traceback stored on it, not the study."""
