"""Storage: a URL (or $AUTOTUNE_STORAGE, or the default SQLite file) -> an Optuna storage,
through Optuna's public APIs; SQLite file safety; reconnects; read-only access for the
commands that only look.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autotune.storage._resilient import ResilientRDBStorage
    from autotune.storage._storage import (
        StorageSpeedup,
        close_all,
        mask,
        open_storage,
        resolve_url,
        use_storage_speedup,
    )
    from autotune.storage._stored import open_existing

# public name -> the private module that defines it; imported when first used, so
# importing one module of the package does not import the others (and torch)
_WHERE = {
    "open_storage": "_storage",
    "resolve_url": "_storage",
    "mask": "_storage",
    "close_all": "_storage",
    "use_storage_speedup": "_storage",
    "StorageSpeedup": "_storage",
    "ResilientRDBStorage": "_resilient",
    "open_existing": "_stored",
}
__all__ = ["ResilientRDBStorage", "StorageSpeedup", "close_all", "mask", "open_existing",
    "open_storage", "resolve_url", "use_storage_speedup"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
