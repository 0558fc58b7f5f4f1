from __future__ import annotations

import sqlite3

import optuna
import pytest

from autotune import storage
from autotune.errors import StorageError


def test_resolve_url_prefers_flag_then_environment_then_default(monkeypatch):
    monkeypatch.delenv(storage.ENV_VAR, raising=False)
    assert storage.resolve_url(None) == storage.DEFAULT_URL
    monkeypatch.setenv(storage.ENV_VAR, "sqlite:///env.db")
    assert storage.resolve_url(None) == "sqlite:///env.db"
    assert storage.resolve_url("sqlite:///flag.db") == "sqlite:///flag.db"


def test_open_storage_rejects_a_bare_path_naming_the_fix():
    with pytest.raises(StorageError, match=r"pass 'sqlite:///studies.db', not a bare path"):
        storage.open_storage("studies.db")


def test_open_storage_rejects_an_unknown_database():
    with pytest.raises(StorageError, match=r"unsupported database 'oracle\+nothing'"):
        storage.open_storage("oracle+nothing://u@h/db")


def test_open_storage_rejects_a_sqlite_file_in_a_missing_directory(tmp_path):
    with pytest.raises(StorageError, match="does not exist"):
        storage.open_storage(f"sqlite:///{tmp_path}/missing/x.db")
    assert not (tmp_path / "missing").exists()


def test_open_storage_puts_sqlite_in_wal_mode(tmp_path):
    path = tmp_path / "x.db"
    storage.open_storage(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_mask_hides_the_password():
    assert storage.mask("postgresql://bob:s3cret@db/x") == "postgresql://bob:***@db/x"
    assert storage.mask("sqlite:///x.db") == "sqlite:///x.db"


def test_open_storage_accepts_a_plain_postgresql_url(postgres_url):
    # postgresql:// (no driver) must pick the installed psycopg driver, not psycopg2.
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    store = storage.open_storage(plain)
    study = optuna.create_study(storage=store, study_name="plain-url-check")
    assert study.study_name in [s.study_name for s in optuna.get_all_study_summaries(store)]


def test_open_storage_opens_a_journal_file(tmp_path):
    store = storage.open_storage(f"journal:///{tmp_path}/j.log")
    optuna.create_study(storage=store, study_name="j")
    assert (tmp_path / "j.log").stat().st_size > 0


def test_sqlite_connections_commit_in_wal_mode_without_an_fsync_per_write(tmp_path) -> None:
    store = storage.open_storage(f"sqlite:///{tmp_path / 'x.db'}")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
