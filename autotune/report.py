"""`python -m autotune.report`: a stored study's report (the same as `autotune report`)."""

from __future__ import annotations

import sys

from autotune.cli._report import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
