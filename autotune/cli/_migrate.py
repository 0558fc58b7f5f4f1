"""`python -m autotune.migrate SRC DST`: copy studies between storages, history included."""

from __future__ import annotations

import argparse
import sys

import optuna
import sqlalchemy

from autotune.cli import _common as cli
from autotune.errors import UsageError
from autotune.storage import _storage as storage
from autotune.storage import _stored as stored


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=cli.prog("migrate"),
        description="Copy studies (trials, parameters, user attributes, intermediate values, "
                    "the stored definition) from one storage to another, e.g. from a laptop's "
                    "SQLite file to a PostgreSQL server. The source is not modified.",
        epilog="example: python -m autotune.migrate sqlite:///autotune.db "
               "postgresql://user@db-host/autotune")
    parser.add_argument("source", metavar="SRC_URL")
    parser.add_argument("destination", metavar="DST_URL")
    parser.add_argument("--study", metavar="NAME", action="append",
                        help="copy only this study (repeatable; default: all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        source = stored.open_existing(args.source)
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(source))
        chosen = args.study or names
        unknown = [n for n in chosen if n not in names]
        if unknown:
            raise UsageError(f"unknown study '{unknown[0]}' in {storage.mask(args.source)}; "
                             f"available: {', '.join(names) or 'none'}")
        destination = storage.open_storage(args.destination)
        existing = {s.study_name for s in optuna.get_all_study_summaries(destination)}
        clash = [n for n in chosen if n in existing]
        if clash:
            raise UsageError(f"study '{clash[0]}' already exists in "
                             f"{storage.mask(args.destination)}; nothing was copied")
        for name in chosen:
            optuna.copy_study(from_study_name=name, from_storage=source,
                              to_storage=destination)
            n = len(optuna.load_study(study_name=name, storage=destination).trials)
            print(f"copied study '{name}' ({n} trials) to {storage.mask(args.destination)}")
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except sqlalchemy.exc.OperationalError as exc:
        print(f"error: storage unreachable: {str(exc.orig).strip().splitlines()[0]}",
              file=sys.stderr)
        return 1
    finally:
        storage.close_all()  # the destination's SQLite file whole before anyone copies it
    return 0

