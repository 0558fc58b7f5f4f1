"""One module per command, each with `main(argv) -> int`: `autotune <command>` and
`python -m autotune.<command>` both end here.
"""

from __future__ import annotations

__all__: list[str] = []
