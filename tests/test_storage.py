from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from autotune.errors import StorageError
from autotune.storage import _storage as storage
from tests.conftest import REPO, file_hashes, finished_in_copy, write_study


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


# --- SQLite files a user copies, points at by mistake, or cannot write: the run's CLI ------

TINY_STUDY = """
dataset = "digits"
[budget]
n_trials = 2
max_epochs = 2
[fixed]
width = 16
depth = 1
[space]
lr = { low = 1e-3, high = 1e-1, log = true }
"""


def run_cli(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "autotune.run", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def assert_refused(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_a_finished_run_leaves_the_whole_study_in_the_db_file_alone(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    spec = write_study(tmp_path, TINY_STUDY, name="tiny")
    assert run_cli("--study", str(spec), "--storage", url).returncode == 0
    assert not (tmp_path / "w.db-wal").exists() or (tmp_path / "w.db-wal").stat().st_size == 0
    counts = finished_in_copy(url, tmp_path)
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == 2


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """The file made read-only for the process under test: chmod for an ordinary user;
    as root (who writes through mode bits) the immutable attribute, which binds root too."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)
        return
    if shutil.which("chattr") is None or subprocess.run(
            ["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr +i: no way to make a file read-only")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_read_only_database_file_is_refused_at_once_and_left_untouched(tmp_path):
    url = f"sqlite:///{tmp_path / 'ro.db'}"
    spec = write_study(tmp_path, TINY_STUDY, name="tiny")
    assert run_cli("--study", str(spec), "--storage", url).returncode == 0
    before = file_hashes(url)
    with read_only(tmp_path / "ro.db"):
        result = run_cli("--study", str(spec), "--storage", url, "--n-trials", "3",
                         timeout=60)  # it used to retry for ~2 minutes
        assert_refused(result, f"cannot write {tmp_path / 'ro.db'}: read-only")
        assert file_hashes(url) == before  # no -wal or -shm left behind either


def test_a_file_that_is_not_a_database_is_refused_and_left_untouched(tmp_path):
    (tmp_path / "notadb.db").write_text("my notes, not a database\n")
    url = f"sqlite:///{tmp_path / 'notadb.db'}"
    before = file_hashes(url)
    result = run_cli("--study", "digits", "--storage", url)
    assert_refused(result, "is not a SQLite database")
    assert file_hashes(url) == before


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_sqlite_storage_is_refused_at_once(url):
    result = run_cli("--study", "digits", "--storage", url, timeout=60)
    assert_refused(result, "is an in-memory database")


def test_a_refused_run_on_a_plain_optuna_study_leaves_every_byte_as_it_was(tmp_path):
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    code = ("import optuna, sys; s = optuna.create_study(study_name='digits', "
            "storage=sys.argv[1], direction='minimize'); "
            "s.optimize(lambda t: t.suggest_float('x', 0, 1) ** 2, n_trials=3)")
    subprocess.run([sys.executable, "-c", code, url], check=True, capture_output=True)
    before = file_hashes(url)
    result = run_cli("--study", "digits", "--storage", url)
    assert_refused(result, "was not created by autotune")
    assert file_hashes(url) == before  # still a rollback journal: no switch to WAL


def test_an_empty_storage_flag_is_refused_and_creates_nothing(tmp_path):
    result = run_cli("--study", "digits", "--storage", "", cwd=tmp_path)
    assert_refused(result, "--storage is empty")
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_server_is_reported_at_once_then_retried_then_exit_1():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "autotune.run", "--study", "digits", "--storage",
         f"postgresql://nobody@127.0.0.1:{port}/autotune"], cwd=REPO, text=True,
        stderr=subprocess.PIPE, stdout=subprocess.PIPE,
        env={**os.environ, "AUTOTUNE_RECONNECT_S": "4"})
    assert proc.stderr is not None
    first = proc.stderr.readline()
    first_after_s = time.monotonic() - started
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 1
    assert "does not answer" in first and "retrying for up to 4 s" in first
    # said before the retries ran out (interpreter start-up included), not after them
    assert first_after_s < 4 and time.monotonic() - started >= 4
    assert "error: storage unreachable" in rest and "Traceback" not in rest


# --- either storage path writes the same study, as plain Optuna reads it -----------------

SEEDED_STUDY = """
dataset = "digits"
seed = 11
[budget]
n_trials = 6
max_epochs = 3
[sampler]
name = "tpe"
n_startup_trials = 3
[pruner]
name = "median"
n_startup_trials = 2
n_warmup_steps = 0
[fixed]
width = 16
depth = 1
[space]
lr = { low = 1e-4, high = 0.5, log = true }
optimizer = { choices = ["sgd", "adam"] }
"""


def plain_view(study: optuna.Study) -> list[tuple]:
    """What plain Optuna shows of each trial (no times: they differ run to run)."""
    return [(t.number, t.state.name, t.params, t.values, t.intermediate_values,
             sorted(k for k in t.user_attrs)) for t in study.trials]


def test_the_speed_up_layer_on_and_off_writes_the_same_study(tmp_path, postgres_url):
    # on: autotune.fast's batched storage and training steps; off: plain Optuna and torch
    spec = write_study(tmp_path, SEEDED_STUDY, name="seeded")
    views, urls = {}, {}
    for fast in ("1", "0"):
        url = urls[fast] = f"sqlite:///{tmp_path / f'fast{fast}.db'}"
        done = run_cli("--study", str(spec), "--storage", url, "--study-name", f"seeded{fast}",
                       env={"AUTOTUNE_PLUGINS": "all" if fast == "1" else "none"},
                       timeout=300)
        assert done.returncode == 0, done.stderr
        views[fast] = plain_view(optuna.load_study(study_name=f"seeded{fast}", storage=url))
    # the same trials, values and curves; TPE's params equal up to float rounding, as
    # TPE's truncated normal comes from SciPy with the layer on (tests/test_tpe_math.py)
    assert len(views["1"]) == len(views["0"])
    for on, off in zip(views["1"], views["0"], strict=True):
        assert on[:2] + on[3:] == off[:2] + off[3:]
        assert on[2].keys() == off[2].keys()
        for name, value in on[2].items():
            assert (math.isclose(value, off[2][name], rel_tol=1e-9)
                    if isinstance(value, float) else value == off[2][name]), (on[0], name)
    assert {state for _, state, *_ in views["1"]} >= {"COMPLETE"}
    # copied to PostgreSQL by Optuna itself, and listed by Optuna's own command line
    optuna.copy_study(from_study_name="seeded1", from_storage=urls["1"],
                      to_storage=postgres_url, to_study_name="seeded1-copy")
    copied = optuna.load_study(study_name="seeded1-copy", storage=postgres_url)
    assert plain_view(copied) == views["1"]
    assert copied.user_attrs == optuna.load_study(study_name="seeded1",
                                                  storage=urls["1"]).user_attrs
    listed = subprocess.run([str(Path(sys.executable).parent / "optuna"), "trials",
                             "--study-name", "seeded0", "--storage", urls["0"], "-f", "json"],
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert [row["number"] for row in json.loads(listed.stdout)] == [v[0] for v in views["0"]]


def test_a_bad_fast_storage_setting_is_refused_in_one_line():
    result = run_cli("--study", "digits", env={"AUTOTUNE_FAST_STORAGE": "yes"})
    assert_refused(result, "$AUTOTUNE_FAST_STORAGE must be 0 or 1, got 'yes'")


TAKE_QUEUED = '''
import json, sys, optuna
from autotune.plugins._installed import load_installed
from autotune.storage import _storage as storage
if sys.argv[2] == "fast":
    load_installed()  # the batched storage, where the plugin offers it
optuna.logging.set_verbosity(optuna.logging.ERROR)
study = optuna.load_study(study_name="queued", storage=storage.open_storage(sys.argv[1]))
taken = []
for _ in range(40):
    trial = study.ask()
    taken.append(trial.number)
    study.tell(trial, 1.0)
print(json.dumps(taken))
'''


@pytest.mark.parametrize("layer", ["plain", "fast"])
def test_two_workers_on_one_sqlite_file_never_take_the_same_queued_trial(tmp_path, layer):
    # Optuna alone lets both take one (its issues 4002, 4621): the second tell then fails
    url = f"sqlite:///{tmp_path / 'queued.db'}"
    study = optuna.create_study(study_name="queued", storage=url)
    for x in range(80):
        study.enqueue_trial({"x": x})
    study._storage._backend.engine.dispose()  # type: ignore[attr-defined]
    env = {**os.environ, "PYTHONPATH": str(REPO), "AUTOTUNE_PLUGINS": "all"}
    workers = [subprocess.Popen([sys.executable, "-c", TAKE_QUEUED, url, layer], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outputs = [w.communicate(timeout=120) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
    first, second = (json.loads(out) for out, _ in outputs)
    assert len(first) == len(second) == 40
    assert sorted(first + second) == list(range(80))  # each queued trial taken once
