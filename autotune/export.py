"""`python -m autotune.export`: the best trial as a study file (the same as `autotune export`)."""

from __future__ import annotations

import sys

from autotune.cli._export import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
