"""Where workers run: K local processes (forked or new) sharing one study.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autotune.launch._local import Placement, plan, worker_command

# public name -> the private module that defines it; imported when first used, so
# importing one module of the package does not import the others (and torch)
_WHERE = {
    "Placement": "_local",
    "plan": "_local",
    "worker_command": "_local",
}
__all__ = ["Placement", "plan", "worker_command"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
