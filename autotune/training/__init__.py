"""Training one model with plain torch: `fit` (the epoch loop), the built-in models and
data sets, losses and metrics, augmentation, checkpoints in an artifact store.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autotune.training._data import Splits, load_splits
    from autotune.training._fit import (
        EpochResult,
        FitResult,
        FitSpeedup,
        TrainState,
        evaluate,
        fit,
        fit_speedup,
        use_fit_speedup,
    )
    from autotune.training._losses import LOSSES, METRICS, Loss, Metric
    from autotune.training._models import build_for, build_model
    from autotune.training._streams import Streamed

# public name -> the private module that defines it; imported when first used, so
# importing one module of the package does not import the others (and torch)
_WHERE = {
    "fit": "_fit",
    "evaluate": "_fit",
    "EpochResult": "_fit",
    "FitResult": "_fit",
    "TrainState": "_fit",
    "use_fit_speedup": "_fit",
    "fit_speedup": "_fit",
    "FitSpeedup": "_fit",
    "build_model": "_models",
    "build_for": "_models",
    "Splits": "_data",
    "load_splits": "_data",
    "LOSSES": "_losses",
    "METRICS": "_losses",
    "Loss": "_losses",
    "Metric": "_losses",
    "Streamed": "_streams",
}
__all__ = ["EpochResult", "FitResult", "FitSpeedup", "LOSSES", "Loss", "METRICS", "Metric",
           "Splits", "Streamed", "TrainState", "build_for", "build_model", "evaluate", "fit",
           "fit_speedup", "load_splits", "use_fit_speedup"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
