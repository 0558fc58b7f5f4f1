"""`python -m autotune.dashboard`: optuna-dashboard on the storage (= `autotune dashboard`)."""

from __future__ import annotations

import sys

from autotune.cli._dashboard import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
