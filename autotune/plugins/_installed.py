"""Installed plugins: packages that declare an entry point in the group `autotune.plugins`
(a function taking no arguments that plugs into the core's hooks), loaded once per process
by the commands that train. autotune's own speed-ups are one (`fast = "autotune.fast:install"`).

$AUTOTUNE_PLUGINS picks them: unset or "all" loads every installed one, "none" none, and a
comma-separated list of names only those.
"""

from __future__ import annotations

import functools
import os
from importlib.metadata import entry_points

from autotune.errors import UsageError

GROUP = "autotune.plugins"
ENV = "AUTOTUNE_PLUGINS"


@functools.cache
def load_installed() -> tuple[str, ...]:
    """Load the installed plugins $AUTOTUNE_PLUGINS allows (once per process); returns their
    names. UsageError (one line) for an unknown name, or a plugin that fails to load."""
    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    wanted = os.environ.get(ENV, "").strip() or "all"
    if wanted == "all":
        names = sorted(found)
    elif wanted == "none":
        names = []
    else:
        names = [n.strip() for n in wanted.split(",") if n.strip()]
        unknown = [n for n in names if n not in found]
        if unknown:
            raise UsageError(f"${ENV}: no installed plugin named {', '.join(unknown)}; "
                             f"installed: {', '.join(sorted(found)) or 'none'} (or all, none)")
    for name in names:
        try:
            found[name].load()()
        except UsageError:
            raise
        except Exception as exc:
            raise UsageError(f"plugin '{name}' ({found[name].value}) failed to load: "
                             f"{type(exc).__name__}: {exc}; ${ENV}=none runs without "
                             "plugins") from None
    return tuple(names)
