"""Storage: --storage > $AUTOTUNE_STORAGE > default SQLite file -> an Optuna storage."""

from __future__ import annotations

import atexit
import errno
import os
import random
import sqlite3
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Protocol

import optuna
import optuna.storages.journal
import sqlalchemy
from sqlalchemy.engine import URL, make_url

from autotune import _env as env
from autotune.errors import StorageError
from autotune.search._retry import MAX_RETRY, RetryTrial
from autotune.storage._resilient import (
    ResilientRDBStorage,
    is_connection_error,
    reconnect_s,
    report_timing,
)

DEFAULT_URL = "sqlite:///autotune.db"  # relative to the working directory
ENV_VAR = "AUTOTUNE_STORAGE"
SQLITE_BUSY_TIMEOUT_S = 60  # wait this long for another process's write lock before failing
# A running trial writes a heartbeat every heartbeat_s(); one silent for grace_s() is stale: it
# is marked failed and retried (same params, from its last checkpoint). RDB storages only.
HEARTBEAT_S = 10  # default of $AUTOTUNE_HEARTBEAT_S
GRACE_S = 30  # default of $AUTOTUNE_GRACE_S
SCHEMA_RACE_RETRIES = 5
# Drivers installed with autotune; a bare dialect name would pick one that is not.
DEFAULT_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg",
                   "mysql": "mysql+pymysql", "mariadb": "mysql+pymysql"}
FORMS = ("sqlite:///PATH.db, postgresql://USER@HOST/DB, mysql://USER@HOST/DB, "
         "journal:///PATH.log, redis://HOST:PORT, grpc://HOST:PORT")
GRPC_READY_S = 5.0  # a gRPC storage proxy that does not answer within this is not there


def heartbeat_s() -> int:
    """Seconds between a running trial's heartbeats: $AUTOTUNE_HEARTBEAT_S, else HEARTBEAT_S."""
    return env.whole_seconds("AUTOTUNE_HEARTBEAT_S", HEARTBEAT_S)


def grace_s() -> int:
    """Seconds of silence after which a trial is stale: $AUTOTUNE_GRACE_S, else GRACE_S."""
    return env.whole_seconds("AUTOTUNE_GRACE_S", GRACE_S)


def resolve_url(flag: str | None) -> str:
    """The storage URL in force: the --storage flag, else $AUTOTUNE_STORAGE, else the default.
    An empty flag is refused rather than read as "not given" (an empty $AUTOTUNE_STORAGE is
    unset, as the shell's `VAR= cmd` means)."""
    if flag is not None:
        if not flag.strip():
            raise StorageError(f"--storage is empty; give a URL ({FORMS}) or leave the flag "
                               f"out for ${ENV_VAR}, else {DEFAULT_URL}")
        return flag
    return os.environ.get(ENV_VAR) or DEFAULT_URL


def mask(url: str) -> str:
    """The URL with any password replaced by ***, safe to print."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def open_storage(url: str, *, writable: bool = True, pool_size: int | None = None
                 ) -> optuna.storages.BaseStorage:
    """Open (creating if needed) the storage a URL names; StorageError if it is malformed.

    A SQLite file is checked before SQLite opens it: it must be a database (or new), and
    writable unless `writable` is False (the commands that only read). `pool_size` caps a
    database server's connections at that many (None: SQLAlchemy's default pool). An existing file
    keeps its journal mode until `prepare_for_writes` (a run refused after opening must
    leave every byte as it was); a new one starts in WAL mode. Every RDB storage opened here
    is closed at exit (`close_all`), which folds a SQLite file's WAL back into it."""
    if "://" not in url:
        raise StorageError(f"storage '{url}' is not a URL; pass 'sqlite:///{url}', not a bare "
                           f"path (forms: {FORMS})")
    scheme = url.split("://", 1)[0]
    if scheme == "journal":
        return _open_journal_file(url.split("://", 1)[1])
    if scheme == "redis":
        backend = optuna.storages.journal.JournalRedisBackend(url)
        return optuna.storages.JournalStorage(backend)
    if scheme == "grpc":
        return open_grpc(url)
    return _open_rdb(_with_default_driver(url), writable=writable, pool_size=pool_size)


def grpc_address(url: str) -> tuple[str, int]:
    """(host, port) of a grpc://HOST:PORT URL; StorageError for anything else."""
    rest = url.split("://", 1)[1].rstrip("/")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in rest:
        raise StorageError(f"storage '{url}' is not grpc://HOST:PORT (the address of a "
                           "storage proxy: autotune proxy --storage URL --port PORT)")
    return host.strip("[]"), int(port)


def check_grpc_installed() -> None:
    """StorageError (exit 2) saying how to install gRPC when it is missing."""
    try:
        import grpc  # noqa: F401
    except ImportError:
        raise StorageError("a gRPC storage proxy needs grpcio, which is not installed: "
                           "pip install 'autotune[grpc]'") from None


def open_grpc(url: str) -> optuna.storages.BaseStorage:
    """A client of Optuna's gRPC storage proxy (`autotune proxy`), checked to answer: the
    proxy holds the database connections, so any number of workers share its few. It is no
    BaseHeartbeat: trials beat through a trial attribute instead (search._beats)."""
    host, port = grpc_address(url)
    check_grpc_installed()
    with warnings.catch_warnings():  # "experimental" since Optuna 4.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        proxy = optuna.storages.GrpcStorageProxy(host=host, port=port)
    try:
        proxy.wait_server_ready(timeout=GRPC_READY_S)
    except ConnectionError:
        proxy.close()
        raise StorageError(f"no storage proxy answers at {url} (waited {GRPC_READY_S:g} s); "
                           "start one with: autotune proxy --storage URL --port "
                           f"{port}") from None
    return proxy


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


class ClaimCounter(Protocol):
    """Counts of a study's claimed trials (finished + running) a storage keeps itself."""

    def count_claimed(self, study: optuna.Study, before: int | None) -> int:
        """Finished plus running trials (numbered below `before`, if given)."""

    def claimed_at_creation(self, trial: optuna.Trial) -> int | None:
        """The count as of the transaction that created the trial, if it was kept."""

    def claimed_at_finish(self, trial: optuna.trial.FrozenTrial) -> int | None:
        """The count as of the transaction that finished the trial, if it was kept."""


class StorageSpeedup(Protocol):
    """A speed-up of relational storages (registered by a plugin, e.g. autotune.fast). The
    rows it writes must read back through plain Optuna as Optuna's own would."""

    def rdb_class(self) -> type[ResilientRDBStorage] | None:
        """The class to open RDB URLs with (a ResilientRDBStorage), or None for the plain."""

    def flush(self, trial: optuna.Trial) -> None:
        """Store now whatever the storage holds back of a running trial's writes."""

    def claim_counter(self, study: optuna.Study) -> ClaimCounter | None:
        """The study's storage, if it counts claimed trials itself; else None."""


_speedup: StorageSpeedup | None = None


def use_storage_speedup(speedup: StorageSpeedup | None) -> StorageSpeedup | None:
    """Open RDB storages through `speedup` from now on (None: Optuna's RDBStorage with
    reconnects); returns the one it replaces."""
    global _speedup
    previous, _speedup = _speedup, speedup
    return previous


def flush_trial(trial: optuna.Trial) -> None:
    """Store now what a speed-up holds back of a running trial (nothing to do otherwise)."""
    if _speedup is not None:
        _speedup.flush(trial)


def claim_counter(study: optuna.Study) -> ClaimCounter | None:
    """A counter of claimed trials the study's storage keeps itself, or None (count them)."""
    return None if _speedup is None else _speedup.claim_counter(study)


def _open_rdb(url: str, *, writable: bool = True, pool_size: int | None = None
              ) -> ResilientRDBStorage:
    # read first: a bad setting is refused before the database is touched
    heartbeat_interval, grace_period = heartbeat_s(), grace_s()
    kind = (_speedup.rdb_class() if _speedup is not None else None) or ResilientRDBStorage
    # pool_pre_ping replaces connections a database restart has closed.
    engine_kwargs: dict[str, object] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        check_sqlite_file(path, writable=writable)
        if not path.is_file() or path.stat().st_size == 0:
            _switch_to_wal(path)  # a new file: nothing in it to leave untouched
        engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    else:
        _say_when_slow(url)
        if pool_size is not None:  # at most this many connections, however many ask
            engine_kwargs.update(pool_size=pool_size, max_overflow=0)
        parsed = make_url(url)
        if parsed.get_backend_name() == "postgresql" and "application_name" not in parsed.query:
            # who holds a connection, in pg_stat_activity: a worker, or the proxy
            engine_kwargs["connect_args"] = {
                "application_name": "autotune proxy" if pool_size is not None else "autotune"}
    give_up_at = time.monotonic() + reconnect_s()
    races = 0
    while True:
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                rdb = kind(url, engine_kwargs=engine_kwargs,
                           heartbeat_interval=heartbeat_interval,
                           grace_period=grace_period, **_retry_callback())
            if url.startswith("sqlite"):
                _commit_without_fsync_per_write(rdb.engine)
            _opened.append(rdb)
            return rdb
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # Two processes creating the tables of a new database at once: the loser finds
            # them half made; once the winner is done, opening again succeeds.
            races += 1
            if races == SCHEMA_RACE_RETRIES:
                raise
            time.sleep(0.5 + random.random())
        except Exception as exc:  # a server down or restarting: as every storage call does
            if not is_connection_error(exc) or time.monotonic() > give_up_at:
                raise
            time.sleep(2.0)


def _retry_callback() -> dict[str, Any]:
    """The stale-trial retry callback, under the argument's Optuna 5 name or its 4.x name."""
    new_name = hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback")
    key = "heartbeat_stale_trial_callback" if new_name else "failed_trial_callback"
    return {key: RetryTrial(max_retry=MAX_RETRY)}


def _commit_without_fsync_per_write(engine: sqlalchemy.engine.Engine) -> None:
    """synchronous=NORMAL on every SQLite connection: in WAL mode a commit then survives a
    crash of the process (all autotune promises); only a power loss may undo the last few.
    Halves the cost of each storage write (2.2 -> 1.2 ms per set_user_attr here)."""
    sqlalchemy.event.listen(engine, "connect",
                            lambda conn, _record: conn.execute("PRAGMA synchronous=NORMAL"))
    engine.dispose()  # connections opened while creating the tables get the pragma too


def sqlite_path(url: str) -> Path:
    """The file a sqlite:// URL names; StorageError for an in-memory database, which no
    resume and no other worker could ever see."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        raise StorageError(f"storage '{url}' is an in-memory database: a study there cannot "
                           "be resumed or shared by workers; give a file, e.g. "
                           "sqlite:///autotune.db")
    return Path(database)


def check_sqlite_file(path: Path, *, writable: bool = True) -> None:
    """Refuse, without touching it, a path SQLite cannot keep a study in: a missing folder,
    a folder, a file that is not a SQLite database, or (when `writable`) a read-only file or
    folder (SQLite would retry its writes for minutes, then fail with a misleading error)."""
    where = f"storage 'sqlite:///{path}'"
    if _is_open_here(path):
        return  # checked when first opened; reading it now would drop SQLite's locks on it
    if not path.parent.is_dir():
        raise StorageError(f"{where}: directory '{path.parent}' does not exist; create it or "
                           "choose another path")
    if path.is_dir():
        raise StorageError(f"{where}: '{path}' is a directory; name a file inside it, e.g. "
                           f"sqlite:///{path / 'autotune.db'}")
    if path.exists():
        try:
            with open(path, "rb") as file:
                header = file.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from None
        if header and header != SQLITE_HEADER:
            raise StorageError(f"{where}: '{path}' exists and is not a SQLite database; "
                               "choose another file name")
    if not writable:
        return
    if path.exists():
        try:
            os.close(os.open(path, os.O_RDWR))  # opening for writing writes nothing
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise StorageError(f"cannot write {path}: read-only") from None
            raise StorageError(f"cannot open {path}: {exc.strerror or exc}") from None
    # SQLite keeps its -wal and -shm files (or a new database) beside the file
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise StorageError(f"cannot write {path}: its folder '{path.parent}' is read-only")


SQLITE_HEADER = b"SQLite format 3\x00"


def _switch_to_wal(path: Path) -> None:
    """WAL mode, so readers (dashboard, workers) never block the writer; persistent: stored
    in the file's header."""
    with sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.close()


def prepare_for_writes(store: optuna.storages.BaseStorage) -> None:
    """Switch an existing SQLite file made elsewhere (plain Optuna uses a rollback journal)
    to WAL mode: called once a run has decided to write, never before a refusal."""
    rdb = getattr(store, "_backend", store)
    if not isinstance(rdb, optuna.storages.RDBStorage) or rdb.engine.dialect.name != "sqlite":
        return
    # asked through SQLite, never by reading the file: closing any other descriptor of the
    # file drops every POSIX lock this process holds on it, and SQLite's with them
    with rdb.engine.connect() as conn:
        if str(conn.exec_driver_sql("PRAGMA journal_mode").scalar()).lower() == "wal":
            return
    rdb.engine.dispose()  # the switch needs the file to itself in this process
    _switch_to_wal(Path(str(rdb.engine.url.database)))


_opened: list[optuna.storages.RDBStorage] = []


def _is_open_here(path: Path) -> bool:
    """Whether a storage this process opened (and has not closed) uses this SQLite file."""
    return any(rdb.engine.dialect.name == "sqlite" and rdb.engine.url.database and
               Path(rdb.engine.url.database).resolve() == path.resolve() for rdb in _opened)


def close_all() -> None:
    """Close every RDB storage this process opened: its pooled connections, and for a SQLite
    file a checkpoint that moves the WAL's pages into the file (TRUNCATE: the -wal file is
    left empty), so the .db file alone is the whole study, ready to copy. Another process
    still reading the file makes the checkpoint give way at once; the last to close folds it
    in. Run at exit (also after errors and Ctrl-C) and by commands when they finish."""
    while _opened:
        rdb = _opened.pop()
        sqlite_file = (rdb.engine.url.database if rdb.engine.dialect.name == "sqlite"
                       else None)
        try:
            rdb.remove_session()
            rdb.engine.dispose()
        except Exception:  # a connection a dead server took: nothing left to close
            pass
        if sqlite_file:
            _checkpoint(Path(sqlite_file))
    report_timing()  # a forked worker's totals; it exits without exit handlers


def _checkpoint(path: Path) -> None:
    try:
        conn = sqlite3.connect(path, timeout=1.0)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()  # the last connection to close also removes -wal and -shm
    except sqlite3.Error:  # held by another process now: its own exit checkpoints
        pass


atexit.register(close_all)


def _say_when_slow(url: str) -> None:
    """A database server that does not answer within a second is reported at once: the
    storage calls retry for up to reconnect_s() before giving up (exit 1)."""
    parsed = make_url(url)
    host, port = parsed.host, parsed.port or DEFAULT_PORTS.get(parsed.get_backend_name())
    if not host or not port or host.startswith("/"):
        return
    import socket

    try:
        socket.create_connection((host, port), timeout=1.0).close()
    except OSError as exc:
        print(f"storage: {mask(url)} does not answer ({exc.strerror or exc}); retrying for up "
              f"to {reconnect_s():.0f} s", file=sys.stderr, flush=True)


DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}


def _open_journal_file(path: str) -> optuna.storages.JournalStorage:
    if not path:
        raise StorageError(f"journal storage needs a file path; forms: {FORMS}")
    if not Path(path).parent.is_dir():
        raise StorageError(f"storage 'journal://{path}': directory '{Path(path).parent}' does "
                           "not exist")
    backend = optuna.storages.journal.JournalFileBackend(path)
    return optuna.storages.JournalStorage(backend)
