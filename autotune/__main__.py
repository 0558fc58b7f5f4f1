"""`autotune <command> ...` (and `python -m autotune <command> ...`): one entry for every
command; each is also runnable on its own as `python -m autotune.<command>`."""

from __future__ import annotations

import importlib
import sys

from autotune import __version__
from autotune.cli import _common as cli

# command -> (module, what it does); each module has main(argv) -> int
COMMANDS = {
    "run": ("autotune.cli._run", "run or resume a search declared in a study file"),
    "status": ("autotune.cli._status", "studies, their counts, and who is running what"),
    "dashboard": ("autotune.cli._dashboard", "serve optuna-dashboard on the storage"),
    "report": ("autotune.cli._report", "summary, top trials, HTML report with plots, or JSON"),
    "export": ("autotune.cli._export", "the best trial as a study file (retrain it) or JSON"),
    "migrate": ("autotune.cli._migrate", "copy studies between storages, history included"),
    "proxy": ("autotune.cli._proxy", "serve a storage to many workers over gRPC (one pool)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: autotune COMMAND [ARGS...]   (autotune COMMAND --help for its flags)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    lines += ["", "example: autotune run --study digits --n-trials 10"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"autotune {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return cli.fail(f"error: unknown command '{command}'; available: "
                        f"{', '.join(COMMANDS)} (autotune --help)", 2)
    cli.ENTRY = "autotune"
    module = importlib.import_module(COMMANDS[command][0])
    code: int = module.main(rest)
    if command == "run":  # as `python -m autotune.run`: skip the interpreter's slow teardown
        cli.exit_now(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
