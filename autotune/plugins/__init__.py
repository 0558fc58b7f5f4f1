"""The seams a user's code plugs into (`file.py:function` or `package.module:function`),
and the installed plugins that register through them (entry point group
`autotune.plugins`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autotune.plugins._installed import GROUP, load_installed
    from autotune.plugins._references import (
        DATASETS,
        MODELS,
        Data,
        DataInfo,
        code_hash,
        is_reference,
        load_function,
        register_dataset,
        register_model,
    )

# public name -> the private module that defines it; imported when first used, so
# importing one module of the package does not import the others (and torch)
_WHERE = {
    "Data": "_references",
    "DataInfo": "_references",
    "load_function": "_references",
    "is_reference": "_references",
    "code_hash": "_references",
    "MODELS": "_references",
    "DATASETS": "_references",
    "register_model": "_references",
    "register_dataset": "_references",
    "load_installed": "_installed",
    "GROUP": "_installed",
}
__all__ = ["DATASETS", "Data", "DataInfo", "GROUP", "MODELS", "code_hash", "is_reference",
           "load_function", "load_installed", "register_dataset", "register_model"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
