"""An RDB storage that rides out a database restart: reconnect and retry, never give up early."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import optuna
import sqlalchemy

from autotune import _env as env

RECONNECT_FOR_S = 120.0  # default of $AUTOTUNE_RECONNECT_S: how long storage calls retry
RECONNECT_ENV = "AUTOTUNE_RECONNECT_S"
_F = TypeVar("_F", bound=Callable[..., Any])

# Methods that talk to the database. A call that failed on a dropped connection was rolled
# back by the server, so running it again does not apply it twice.
_RETRIED = ("create_new_study", "create_new_trial", "get_all_studies", "get_all_trials",
            "get_best_trial", "get_n_trials", "get_study_directions", "get_study_id_from_name",
            "get_study_name_from_id", "get_study_system_attrs", "get_study_user_attrs",
            "get_trial", "get_trial_id_from_study_id_trial_number",
            "get_trial_number_from_id", "get_trial_param", "get_trial_params",
            "get_trial_system_attrs", "get_trial_user_attrs", "set_study_system_attr",
            "set_study_user_attr", "set_trial_intermediate_value", "set_trial_param",
            "set_trial_state_values", "set_trial_system_attr", "set_trial_user_attr",
            "record_heartbeat", "_get_stale_trial_ids", "check_trial_is_updatable",
            # Optuna's cache layer calls these two directly, not their public methods
            "_create_new_trial", "_get_trials")


class _Timing(threading.local):
    depth = 0  # nesting of wrapped calls in this thread: count only the outermost


_timing = _Timing()
storage_seconds = [0.0]  # wall seconds this process spent inside storage calls, all threads
TIMING_ENV = "AUTOTUNE_STORAGE_TIMING"  # file to which each process appends its totals


def report_timing() -> None:
    """Append this process's totals to $AUTOTUNE_STORAGE_TIMING (a benchmark's), once: at
    exit, or when its storages close (a forked worker leaves without exit handlers)."""
    path = os.environ.get(TIMING_ENV)
    if path and not _reported[0]:
        _reported[0] = True
        with open(path, "a") as out:
            out.write(json.dumps({"pid": os.getpid(), "storage_s": storage_seconds[0],
                                  "wall_s": time.monotonic() - _started[0]}) + "\n")


def _count_from_zero() -> None:
    """In a forked child: its own totals, not its parent's so far, reported once."""
    storage_seconds[0] = 0.0
    _started[0] = time.monotonic()
    _reported[0] = False


_started = [time.monotonic()]
_reported = [False]  # this process's row written
atexit.register(report_timing)
os.register_at_fork(after_in_child=_count_from_zero)


def reconnect_s() -> float:
    """Seconds a storage call keeps retrying while the server is down: $AUTOTUNE_RECONNECT_S,
    else RECONNECT_FOR_S."""
    return env.seconds(RECONNECT_ENV, RECONNECT_FOR_S)


def _retrying(method: _F) -> _F:
    @functools.wraps(method)
    def wrapper(self: optuna.storages.RDBStorage, *args: Any, **kwargs: Any) -> Any:
        _timing.depth += 1
        started = time.perf_counter()
        try:
            return _call_with_retry(method, self, *args, **kwargs)
        finally:
            _timing.depth -= 1
            if _timing.depth == 0:
                storage_seconds[0] += time.perf_counter() - started

    return wrapper  # type: ignore[return-value]


def _call_with_retry(method: Callable[..., Any], self: optuna.storages.RDBStorage,
                     *args: Any, **kwargs: Any) -> Any:
    deadline = time.monotonic() + reconnect_s()
    delay_s = 0.25
    while True:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            if not is_connection_error(exc) or time.monotonic() > deadline:
                raise
            first_line = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            print(f"storage: {method.__name__} failed ({first_line}); retrying in "
                  f"{delay_s:.1f}s", file=sys.stderr, flush=True)
            self.remove_session()  # the session's transaction died with the connection
            self.engine.dispose()  # drop every pooled connection to the old server
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, 5.0)


def is_connection_error(exc: BaseException | None) -> bool:
    """Whether an error (or what caused it: Optuna wraps commit errors) is a lost server."""
    while exc is not None:
        if isinstance(exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                            sqlalchemy.exc.InvalidatePoolError,
                            sqlalchemy.exc.PendingRollbackError)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class ResilientRDBStorage(optuna.storages.RDBStorage):
    """RDBStorage whose database calls survive a server restart or a network blip, and
    whose workers on one SQLite file never take the same queued trial."""


for _name in _RETRIED:
    setattr(ResilientRDBStorage, _name, _retrying(getattr(optuna.storages.RDBStorage, _name)))

_set_state_retried = ResilientRDBStorage.set_trial_state_values


def _set_trial_state_values(self: ResilientRDBStorage, trial_id: int,
                            state: optuna.trial.TrialState, values: Any = None) -> bool:
    """Take a queued trial (WAITING -> RUNNING) under a lock shared by every process on this
    machine that uses the same SQLite file. RDBStorage reads the trial's state, then updates
    it; SQLite's Python driver starts the transaction only at the update, so two workers
    could both read WAITING and both take the trial (Optuna issues 4002 and 4621: a
    `[[start_from]]` configuration trained twice, the second tell failing). Under the lock,
    the later one reads RUNNING and is refused, as on PostgreSQL's row lock."""
    if state != optuna.trial.TrialState.RUNNING or self.engine.dialect.name != "sqlite":
        return bool(_set_state_retried(self, trial_id, state, values))
    with _claim_lock(str(self.engine.url.database)):
        return bool(_set_state_retried(self, trial_id, state, values))


ResilientRDBStorage.set_trial_state_values = _set_trial_state_values  # type: ignore[method-assign,assignment]


@contextlib.contextmanager
def _claim_lock(database: str) -> Iterator[None]:
    """An exclusive flock on a file in the temporary folder named after the database's
    path (not the database file itself: closing any descriptor of that file would drop the
    POSIX locks SQLite holds on it in this process)."""
    key = hashlib.sha256(os.path.realpath(database).encode()).hexdigest()[:16]
    path = os.path.join(tempfile.gettempdir(), f"autotune-claim-{key}.lock")
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
