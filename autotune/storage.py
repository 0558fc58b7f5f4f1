"""Storage: --storage > $AUTOTUNE_STORAGE > default SQLite file -> an Optuna storage."""

from __future__ import annotations

import os
import random
import sqlite3
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import optuna.storages.journal
import sqlalchemy
from sqlalchemy.engine import URL, make_url

from autotune import env
from autotune.batched import BatchedRDBStorage
from autotune.errors import StorageError

DEFAULT_URL = "sqlite:///autotune.db"  # relative to the working directory
ENV_VAR = "AUTOTUNE_STORAGE"
SQLITE_BUSY_TIMEOUT_S = 60  # wait this long for another process's write lock before failing
# A running trial writes a heartbeat every heartbeat_s(); one silent for grace_s() is stale: it
# is marked failed and retried (same params, from its last checkpoint). RDB storages only.
HEARTBEAT_S = 10  # default of $AUTOTUNE_HEARTBEAT_S
GRACE_S = 30  # default of $AUTOTUNE_GRACE_S
MAX_RETRY = 3  # retries of one trial whose workers keep dying
SCHEMA_RACE_RETRIES = 5
# Drivers installed with autotune; a bare dialect name would pick one that is not.
DEFAULT_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg",
                   "mysql": "mysql+pymysql", "mariadb": "mysql+pymysql"}
FORMS = ("sqlite:///PATH.db, postgresql://USER@HOST/DB, mysql://USER@HOST/DB, "
         "journal:///PATH.log, redis://HOST:PORT")


def heartbeat_s() -> int:
    """Seconds between a running trial's heartbeats: $AUTOTUNE_HEARTBEAT_S, else HEARTBEAT_S."""
    return env.whole_seconds("AUTOTUNE_HEARTBEAT_S", HEARTBEAT_S)


def grace_s() -> int:
    """Seconds of silence after which a trial is stale: $AUTOTUNE_GRACE_S, else GRACE_S."""
    return env.whole_seconds("AUTOTUNE_GRACE_S", GRACE_S)


def resolve_url(flag: str | None) -> str:
    """The storage URL in force: the --storage flag, else $AUTOTUNE_STORAGE, else the default."""
    return flag or os.environ.get(ENV_VAR) or DEFAULT_URL


def mask(url: str) -> str:
    """The URL with any password replaced by ***, safe to print."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Open (creating if needed) the storage a URL names; StorageError if it is malformed."""
    if "://" not in url:
        raise StorageError(f"storage '{url}' is not a URL; pass 'sqlite:///{url}', not a bare "
                           f"path (forms: {FORMS})")
    scheme = url.split("://", 1)[0]
    if scheme == "journal":
        return _open_journal_file(url.split("://", 1)[1])
    if scheme == "redis":
        backend = optuna.storages.journal.JournalRedisBackend(url)
        return optuna.storages.JournalStorage(backend)
    return _open_rdb(_with_default_driver(url))


def _with_default_driver(url: str) -> str:
    try:
        parsed: URL = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise StorageError(f"storage '{mask(url)}' is not a valid URL; forms: {FORMS}") from None
    if parsed.drivername in DEFAULT_DRIVERS:
        parsed = parsed.set(drivername=DEFAULT_DRIVERS[parsed.drivername])
    try:
        parsed.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        raise StorageError(f"storage '{mask(url)}': unsupported database "
                           f"'{parsed.drivername}'; forms: {FORMS}") from None
    return parsed.render_as_string(hide_password=False)


def _open_rdb(url: str) -> BatchedRDBStorage:
    # read first: a bad setting is refused before the database is touched
    heartbeat_interval, grace_period = heartbeat_s(), grace_s()
    # pool_pre_ping replaces connections a database restart has closed.
    engine_kwargs: dict[str, object] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path:
            _prepare_sqlite_file(Path(path))
        engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    for attempt in range(SCHEMA_RACE_RETRIES):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                rdb = BatchedRDBStorage(url, engine_kwargs=engine_kwargs,
                                        heartbeat_interval=heartbeat_interval,
                                        grace_period=grace_period, **_retry_callback())
            if url.startswith("sqlite"):
                _commit_without_fsync_per_write(rdb.engine)
            return rdb
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # Two processes creating the tables of a new database at once: the loser finds
            # them half made; once the winner is done, opening again succeeds.
            if attempt == SCHEMA_RACE_RETRIES - 1:
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def _retry_callback() -> dict[str, Any]:
    """The stale-trial retry callback under its Optuna 5 name, or its 4.x name."""
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if retry is not None:
            return {"heartbeat_stale_trial_callback": retry(max_retry=MAX_RETRY)}
        return {"failed_trial_callback":
                optuna.storages.RetryFailedTrialCallback(max_retry=MAX_RETRY)}


def _commit_without_fsync_per_write(engine: sqlalchemy.engine.Engine) -> None:
    """synchronous=NORMAL on every SQLite connection: in WAL mode a commit then survives a
    crash of the process (all autotune promises); only a power loss may undo the last few.
    Halves the cost of each storage write (2.2 -> 1.2 ms per set_user_attr here)."""
    sqlalchemy.event.listen(engine, "connect",
                            lambda conn, _record: conn.execute("PRAGMA synchronous=NORMAL"))
    engine.dispose()  # connections opened while creating the tables get the pragma too


def _prepare_sqlite_file(path: Path) -> None:
    """Create the file in WAL mode, so readers (dashboard, workers) never block the writer."""
    if not path.parent.is_dir():
        raise StorageError(f"storage 'sqlite:///{path}': directory '{path.parent}' does not "
                           "exist; create it or choose another path")
    with sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S) as conn:
        conn.execute("PRAGMA journal_mode=WAL")  # persistent: stored in the file itself
    conn.close()


def _open_journal_file(path: str) -> optuna.storages.JournalStorage:
    if not path:
        raise StorageError(f"journal storage needs a file path; forms: {FORMS}")
    if not Path(path).parent.is_dir():
        raise StorageError(f"storage 'journal://{path}': directory '{Path(path).parent}' does "
                           "not exist")
    backend = optuna.storages.journal.JournalFileBackend(path)
    return optuna.storages.JournalStorage(backend)
