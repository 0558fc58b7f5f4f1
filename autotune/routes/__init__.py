"""Your own training instead of autotune's: a function (`train = "train.py:train"`, given an
`autotune.Trial`) or an unchanged script (`script = "train.py"`, reading what it reports
with `autotune.report(...)` or a study's `report_regex`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autotune.routes._function import FunctionObjective
    from autotune.routes._report import TAG, ReportReader, report
    from autotune.routes._script import ScriptObjective
    from autotune.routes._trial import Pruned, Trial

# public name -> the private module that defines it; imported when first used (only the
# objectives and Trial import torch)
_WHERE = {
    "FunctionObjective": "_function",
    "ScriptObjective": "_script",
    "Pruned": "_trial",
    "Trial": "_trial",
    "TAG": "_report",
    "ReportReader": "_report",
    "report": "_report",
}
__all__ = ["TAG", "FunctionObjective", "Pruned", "ReportReader", "ScriptObjective", "Trial",
           "report"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
