"""`python -m autotune.proxy`: a gRPC storage proxy for many workers (as `autotune proxy`)."""

from __future__ import annotations

import sys

from autotune.cli._proxy import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
