"""Shared fixtures: real storages (SQLite files, a throwaway PostgreSQL database)."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get("AUTOTUNE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# CI sets this so a missing service fails the run instead of skipping its tests.
REQUIRE_SERVICES = os.environ.get("AUTOTUNE_REQUIRE_SERVICES") == "1"
REPO = Path(__file__).resolve().parent.parent

# A suite started in the background by a non-interactive shell (`pytest ... &`) inherits
# SIGINT ignored, and so would every process it starts: their Python would then not turn
# the tests' SIGINT (Ctrl-C) into KeyboardInterrupt. A handler here is reset to the default
# in each child at exec, where Python installs its own.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True, scope="session")
def _installed_plugins() -> None:
    """Tests that train or store in-process get the installed plugins (autotune.fast), as
    `autotune run` does; tests of the plain path switch them off themselves."""
    from autotune.plugins import load_installed

    load_installed()


@pytest.fixture(autouse=True, scope="session")
def _artifacts_outside_the_repository(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Runs on server storages would default to ./autotune-artifacts in the checkout."""
    os.environ.setdefault("AUTOTUNE_ARTIFACTS", str(tmp_path_factory.mktemp("artifacts")))


def _skip_or_fail(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (AUTOTUNE_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    import sqlalchemy

    admin = sqlalchemy.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"autotune_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
    except sqlalchemy.exc.OperationalError as exc:
        _skip_or_fail(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc.orig}")
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    yield url
    admin.dispose()  # a test may have restarted the server under the pooled connections
    for _ in range(30):
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            break
        except sqlalchemy.exc.OperationalError:
            time.sleep(1)
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every storage backend the same tests run against."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'studies.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


def write_study(tmp_path: Path, text: str, name: str = "custom") -> Path:
    """Write a study file and return its path."""
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


MYSQL_ADMIN_URL = os.environ.get("AUTOTUNE_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test")
REDIS_TEST_URL = os.environ.get("AUTOTUNE_TEST_REDIS", "redis://127.0.0.1:6379/13")


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """A fresh MySQL/MariaDB database for this test session, dropped afterwards."""
    import sqlalchemy

    admin = sqlalchemy.create_engine(MYSQL_ADMIN_URL)
    name = f"autotune_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
    except sqlalchemy.exc.OperationalError as exc:
        _skip_or_fail(f"MySQL/MariaDB not reachable at {MYSQL_ADMIN_URL}: {exc.orig}")
    yield admin.url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
    admin.dispose()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis database (journal storage) emptied before and after the session."""
    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        client.flushdb()
    except redis.exceptions.ConnectionError as exc:
        _skip_or_fail(f"Redis not reachable at {REDIS_TEST_URL}: {exc}")
    yield REDIS_TEST_URL
    client.flushdb()


@pytest.fixture(params=["sqlite", "postgresql", "mysql", "journal", "redis"])
def any_storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every storage kind autotune supports, for the tests that must hold on all of them."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'studies.db'}"
    if request.param == "journal":
        return f"journal://{tmp_path / 'journal.log'}"
    fixture = {"postgresql": "postgres_url"}.get(request.param, f"{request.param}_url")
    return request.getfixturevalue(fixture)


def file_hashes(url: str) -> dict[str, str | None]:
    """sha256 of a SQLite storage's file and of its -wal and -shm files (None: absent), for
    the tests that require a refused command to leave every byte as it was."""
    import hashlib

    from sqlalchemy.engine import make_url

    path = Path(str(make_url(url).database))
    hashes: dict[str, str | None] = {}
    for suffix in ("", "-wal", "-shm"):
        file = Path(f"{path}{suffix}")
        hashes[file.name] = hashlib.sha256(file.read_bytes()).hexdigest() if file.exists() \
            else None
    return hashes


def finished_in_copy(url: str, tmp_path: Path) -> dict[str, int]:
    """Copy only the .db file of a SQLite storage (no -wal, no -shm) elsewhere and count its
    studies' trials by state with plain Optuna in a fresh interpreter: what a user who copies
    the file to another machine finds there."""
    import json
    import subprocess
    import sys

    from sqlalchemy.engine import make_url

    copy = tmp_path / "copied" / "copy.db"
    copy.parent.mkdir(exist_ok=True)
    # copied by another process: closing a descriptor of the file here would drop the SQLite
    # locks this process's own connections hold on it
    code = ("import collections, json, optuna, shutil, sys; shutil.copyfile(*sys.argv[1:3]); "
            "u = 'sqlite:///' + sys.argv[2]; "
            "print(json.dumps({s.study_name: dict(collections.Counter(t.state.name for t in "
            "optuna.load_study(study_name=s.study_name, storage=u).trials)) "
            "for s in optuna.get_all_study_summaries(u)}))")
    source = str(make_url(url).database)
    out = subprocess.run([sys.executable, "-c", code, source, str(copy)], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    counts: dict[str, int] = {}
    for study_counts in json.loads(out).values():
        for state, n in study_counts.items():
            counts[state] = counts.get(state, 0) + n
    return counts
