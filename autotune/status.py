"""`python -m autotune.status`: studies and who is running what (the same as `autotune status`)."""

from __future__ import annotations

import sys

from autotune.cli._status import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
