"""autotune: Optuna hyperparameter search for PyTorch models, declared in study files."""

from __future__ import annotations

from autotune.api import tune
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
from autotune.spec._config import TrainConfig

__all__ = ["AutotuneError", "Data", "DataError", "DataInfo", "DefinitionMismatch", "Diverged",
           "SpecError", "StorageError", "TrainConfig", "UsageError", "UserCodeError", "tune"]
__version__ = "0.1.0"
