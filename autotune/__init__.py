"""autotune: Optuna hyperparameter search for PyTorch models, declared in study files."""

from __future__ import annotations

from autotune.config import TrainConfig
from autotune.errors import (
                             AutotuneError,
                             DataError,
                             DefinitionMismatch,
                             Diverged,
                             SpecError,
                             StorageError,
                             UsageError,
)

__all__ = ["AutotuneError", "DataError", "DefinitionMismatch", "Diverged", "SpecError",
           "StorageError", "TrainConfig", "UsageError"]
__version__ = "0.1.0"
