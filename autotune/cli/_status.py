"""`python -m autotune.status`: who is working: studies, counts by state, running trials."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections import Counter

import optuna
import sqlalchemy

from autotune.cli import _common as cli
from autotune.errors import UsageError
from autotune.search._beats import BEAT_ATTR
from autotune.search._heartbeat import read_heartbeats
from autotune.storage import _storage as storage
from autotune.storage import _stored as stored


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=cli.prog("status"),
        description="List the studies in a storage with their best value and trial counts, "
                    "and every running trial with its host, pid, device and last heartbeat.")
    parser.add_argument("--storage", metavar="URL",
                        help=f"default: ${storage.ENV_VAR}, else {storage.DEFAULT_URL}")
    parser.add_argument("--study", metavar="NAME", help="show only this study")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        url = storage.resolve_url(args.storage)
        store = stored.open_existing(url)  # never creates a storage
        names = [s.study_name for s in optuna.get_all_study_summaries(store)]
        if args.study is not None and args.study not in names:
            raise UsageError(f"unknown study '{args.study}' in {storage.mask(url)}; available: "
                             f"{', '.join(sorted(names)) or 'none'}")
        chosen = [args.study] if args.study else sorted(names)
        print("\n".join(status_lines(store, chosen)))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except sqlalchemy.exc.OperationalError as exc:
        print(f"error: storage unreachable: {str(exc.orig).strip().splitlines()[0]}",
              file=sys.stderr)
        return 1
    return 0


def status_lines(store: optuna.storages.BaseStorage, names: list[str]) -> list[str]:
    """A table of studies, then one of running trials."""
    lines = [f"{'study':<24} {'best':>8} {'complete':>8} {'pruned':>6} {'failed':>6} "
             f"{'running':>7} {'waiting':>7}"]
    running: list[tuple[str, optuna.trial.FrozenTrial]] = []
    for name in names:
        study = optuna.load_study(study_name=name, storage=store)
        trials = study.get_trials(deepcopy=False)
        counts = Counter(t.state.name for t in trials)
        complete = [t.value for t in trials if t.state.name == "COMPLETE" and t.value is not None]
        pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
        best = f"{pick(complete):.4f}" if complete else "-"
        lines.append(f"{name:<24} {best:>8} {counts['COMPLETE']:>8} {counts['PRUNED']:>6} "
                     f"{counts['FAIL']:>6} {counts['RUNNING']:>7} {counts['WAITING']:>7}")
        running += [(name, t) for t in trials if t.state.name == "RUNNING"]
    if not running:
        return lines + ["", "no trial is running"]
    beat_ages = heartbeat_ages_s(store)
    now = dt.datetime.now()  # Optuna stamps datetime_start with the local time
    lines += ["", f"{'study':<24} {'trial':>5} {'host':<16} {'pid':>7} {'device':<8} "
                  f"{'epochs':>6} {'running for':>11} {'heartbeat':>10}"]
    for name, t in running:
        started = t.datetime_start or now
        age_s = beat_ages.get(t._trial_id)
        beat = t.system_attrs.get(BEAT_ATTR)  # where the storage keeps no heartbeats
        if age_s is None and isinstance(beat, int | float):
            age_s = max(0.0, time.time() - beat)  # the worker's clock against this one
        beat_text = f"{age_s:.0f}s ago" if age_s is not None else "none"
        attrs = t.user_attrs
        lines.append(f"{name:<24} {t.number:>5} {str(attrs.get('host', '?')):<16} "
                     f"{str(attrs.get('pid', '?')):>7} {str(attrs.get('device', '?')):<8} "
                     f"{len(t.intermediate_values):>6} "
                     f"{(now - started).total_seconds():>10.0f}s {beat_text:>10}")
    return lines


def heartbeat_ages_s(store: optuna.storages.BaseStorage) -> dict[int, float]:
    """trial id -> seconds since its last heartbeat, by the database's clock; empty for
    storages without heartbeats."""
    beats, now = read_heartbeats(store)
    return {trial_id: (now - beat).total_seconds() for trial_id, beat in beats.items()
            if now is not None}

