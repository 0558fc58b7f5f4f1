"""Where trials are watched besides optuna-dashboard: TensorBoard event files per trial
(`--tensorboard DIR`) and MLflow runs, one per trial under one per study (`--mlflow URI`),
written from the training process."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autotune.tracking._mlflow import MLflowTracker
    from autotune.tracking._tensorboard import TensorBoardTracker, check_installed, study_folder
    from autotune.tracking._tracker import Tracker, Trackers, scalars_of, tracked

_WHERE = {
    "MLflowTracker": "_mlflow",
    "Trackers": "_tracker",
    "TensorBoardTracker": "_tensorboard",
    "check_installed": "_tensorboard",
    "study_folder": "_tensorboard",
    "Tracker": "_tracker",
    "scalars_of": "_tracker",
    "tracked": "_tracker",
}
__all__ = ["MLflowTracker", "TensorBoardTracker", "Tracker", "Trackers", "check_installed",
           "scalars_of", "study_folder", "tracked"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
