"""`python -m autotune.migrate`: copy studies between storages (the same as `autotune migrate`)."""

from __future__ import annotations

import sys

from autotune.cli._migrate import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
