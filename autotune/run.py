"""`python -m autotune.run`: run or resume a search (the same as `autotune run`)."""

from __future__ import annotations

from autotune.cli import _common as cli
from autotune.cli._run import main

__all__ = ["main"]

if __name__ == "__main__":
    cli.exit_now(main())
