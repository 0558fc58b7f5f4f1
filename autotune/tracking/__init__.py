"""Where trials are watched besides optuna-dashboard: TensorBoard event files per trial
(`--tensorboard DIR`), written from the training process."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autotune.tracking._tensorboard import TensorBoardTracker, check_installed, study_folder
    from autotune.tracking._tracker import Tracker, scalars_of, tracked

_WHERE = {
    "TensorBoardTracker": "_tensorboard",
    "check_installed": "_tensorboard",
    "study_folder": "_tensorboard",
    "Tracker": "_tracker",
    "scalars_of": "_tracker",
    "tracked": "_tracker",
}
__all__ = ["TensorBoardTracker", "Tracker", "check_installed", "scalars_of", "study_folder",
           "tracked"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
