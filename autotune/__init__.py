"""autotune: Optuna hyperparameter search for PyTorch models, declared in study files."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autotune.errors import (
    AutotuneError,
    DataError,
    DefinitionMismatch,
    Diverged,
    SpecError,
    StorageError,
    UsageError,
    UserCodeError,
)
from autotune.plugins._references import Data, DataInfo
from autotune.routes._report import report
from autotune.spec._config import TrainConfig

if TYPE_CHECKING:
    from autotune.api import tune
    from autotune.routes._trial import Pruned, Trial

__all__ = ["AutotuneError", "Data", "DataError", "DataInfo", "DefinitionMismatch", "Diverged",
           "Pruned", "SpecError", "StorageError", "TrainConfig", "Trial", "UsageError",
           "UserCodeError", "report", "tune"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """`tune` (Optuna), `Trial` and `Pruned` (torch) are imported when first used: a script
    that only calls `autotune.report` starts in a few milliseconds more."""
    if name == "tune":
        from autotune.api import tune

        return tune
    if name in ("Trial", "Pruned"):
        from autotune.routes import _trial

        return getattr(_trial, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
