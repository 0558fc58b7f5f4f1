"""`python -m autotune.report`: a stored study's report (the same as `autotune report`).

`autotune.report(...)`, the function a training script reports its epochs with, shares the
name: once this module is imported (which replaces the package's `report` attribute with
it), calling it still calls that function.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from autotune.cli._report import main
from autotune.routes._report import report

__all__ = ["main"]


class _CallableModule(types.ModuleType):
    def __call__(self, epoch: int | None = None, **metrics: Any) -> None:
        report(epoch, **metrics)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
