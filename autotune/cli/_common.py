"""What every `python -m autotune.<command>` shares: argument types that refuse bad values in
one line, the arguments that name a stored study, and the stderr log line."""

from __future__ import annotations

import argparse
import atexit
import math
import os
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

from autotune.storage import _storage as storage

_N = TypeVar("_N", int, float)


def _number(parse: Callable[[str], _N], allowed: Callable[[_N], bool], wanted: str
            ) -> Callable[[str], _N]:
    """An argparse type: `parse` the text, refusing it in one line unless `allowed`."""
    def check(text: str) -> _N:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if not allowed(value):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value

    return check


positive_int = _number(int, lambda v: v >= 1, "an integer >= 1")
positive_float = _number(float, lambda v: 0 < v < math.inf, "a number > 0")
non_negative_float = _number(float, lambda v: 0 <= v < math.inf, "a number >= 0")
port = _number(int, lambda v: 1 <= v <= 65535, "an integer in [1, 65535]")

# how the user reached the command: `autotune` (its __main__ sets this) or `python -m`
ENTRY = "python -m"


def prog(command: str) -> str:
    """The command's name in its usage line, as the user typed it."""
    return f"autotune {command}" if ENTRY == "autotune" else f"python -m autotune.{command}"


def add_stored_study_arguments(parser: argparse.ArgumentParser) -> None:
    """--study NAME (required) and --storage URL, for the commands that read a stored study."""
    parser.add_argument("--study", required=True, metavar="NAME",
                        help="name of the study in storage (as autotune.run or autotune.status "
                             "shows it)")
    parser.add_argument("--storage", metavar="URL",
                        help=f"the storage autotune.run used (default: ${storage.ENV_VAR}, else "
                             f"{storage.DEFAULT_URL} in the working directory)")


def log(message: str) -> None:
    """One line on stderr (logs and errors; stdout is for results)."""
    print(message, file=sys.stderr, flush=True)


def fail(message: str, code: int) -> int:
    """Log `message` and return the exit code, for `return fail(...)` in a command's main."""
    log(message)
    return code


def exit_now(code: int) -> NoReturn:
    """Exit with `code` once the exit handlers ran and stdout/stderr are flushed, without the
    interpreter's teardown of every module: after torch and torch._dynamo (which
    torch.optim imports) that teardown alone takes ~1.1 s on this 2-core CPU, paid by every
    run and every worker process. Everything is stored before this point (trials, files), so
    nothing the teardown would do is needed; non-daemon threads have been joined by then."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a reader that went away
            pass
    os._exit(code)
