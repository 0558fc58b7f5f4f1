from __future__ import annotations

import os
import subprocess
import sys

import optuna

from tests.conftest import REPO, write_study
from tests.test_workers import SLOW_STUDY, start_run, wait_for_trial_with_epochs


def run_module(module: str, *args: str, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, text=True,
                          capture_output=True, timeout=120, env={**os.environ, **(env or {})})


def test_status_lists_running_trials_with_host_pid_and_heartbeat(sqlite_url, tmp_path):
    spec = write_study(tmp_path, SLOW_STUDY, name="watched")
    proc = start_run("--study", str(spec), "--storage", sqlite_url)
    try:
        trial = wait_for_trial_with_epochs(sqlite_url, "watched", n_epochs=1, timeout_s=120)
        result = run_module("autotune.status", "--storage", sqlite_url)
    finally:
        proc.kill()
        proc.wait()
    assert result.returncode == 0, result.stderr
    assert "watched" in result.stdout
    running = [line for line in result.stdout.splitlines()
               if line.startswith("watched") and str(trial.user_attrs["pid"]) in line]
    assert running and "cpu" in running[0] and "ago" in running[0]


def test_status_rejects_an_unknown_study(sqlite_url):
    optuna.create_study(study_name="there", storage=sqlite_url)
    result = run_module("autotune.status", "--storage", sqlite_url, "--study", "nope")
    assert result.returncode == 2
    assert "unknown study 'nope'" in result.stderr and "available: there" in result.stderr


def test_migrate_copies_a_sqlite_study_to_postgresql_and_it_resumes_there(
        sqlite_url, postgres_url, tmp_path):
    from tests.test_workers import SHARED_STUDY

    name = f"moved-{tmp_path.name[-8:]}".replace("_", "-")
    spec = write_study(tmp_path, SHARED_STUDY, name="moved")
    first = subprocess.run([sys.executable, "-m", "autotune.run", "--study", str(spec),
                            "--study-name", name, "--storage", sqlite_url, "--n-trials", "3"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    result = run_module("autotune.migrate", sqlite_url, postgres_url, "--study", name)
    assert result.returncode == 0, result.stderr
    src = optuna.load_study(study_name=name, storage=sqlite_url)
    dst = optuna.load_study(study_name=name, storage=postgres_url)
    assert dst.user_attrs == src.user_attrs
    assert [(t.state, t.params, t.intermediate_values, t.user_attrs) for t in dst.trials] == \
        [(t.state, t.params, t.intermediate_values, t.user_attrs) for t in src.trials]
    again = run_module("autotune.migrate", sqlite_url, postgres_url, "--study", name)
    assert again.returncode == 2 and "already exists" in again.stderr
    resumed = subprocess.run([sys.executable, "-m", "autotune.run", "--study", str(spec),
                              "--study-name", name, "--storage", postgres_url,
                              "--n-trials", "5"], cwd=REPO, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "3 of 5 trials finished" in resumed.stderr
    assert sum(t.state.is_finished() for t in
               optuna.load_study(study_name=name, storage=postgres_url).trials) >= 5


def test_status_ages_heartbeats_by_the_database_clock_in_any_time_zone(sqlite_url):
    store = optuna.storages.RDBStorage(sqlite_url, heartbeat_interval=60)
    study = optuna.create_study(study_name="beating", storage=store)
    trial = study.ask()
    store.record_heartbeat(trial._trial_id)
    result = run_module("autotune.status", "--storage", sqlite_url, env={"TZ": "Asia/Tokyo"})
    assert result.returncode == 0, result.stderr
    line = next(row for row in result.stdout.splitlines() if row.startswith("beating ")
                and row.rstrip().endswith("ago"))
    age_s = int(line.split()[-2].rstrip("s"))
    assert 0 <= age_s < 60, line  # was 32,400 s off: UTC beats against Tokyo's clock


def test_status_shows_the_minimum_as_best_for_a_minimising_study(sqlite_url):
    study = optuna.create_study(study_name="losses", storage=sqlite_url, direction="minimize")
    for value in (0.5, 0.125, 0.9):
        study.add_trial(optuna.trial.create_trial(value=value))
    result = run_module("autotune.status", "--storage", sqlite_url)
    row = next(line for line in result.stdout.splitlines() if line.startswith("losses "))
    assert row.split()[1] == "0.1250"


def test_status_without_a_storage_refuses_and_creates_nothing(tmp_path):
    result = subprocess.run([sys.executable, "-m", "autotune.status"], cwd=tmp_path, text=True,
                            capture_output=True, timeout=120,
                            env={k: v for k, v in os.environ.items() if k != "AUTOTUNE_STORAGE"})
    assert result.returncode == 2
    assert "autotune.db' does not exist" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_status_shows_a_journal_trial_s_beat_written_into_the_trial(tmp_path):
    """A journal keeps no Optuna heartbeats: the beat the worker writes into the trial."""
    import time

    from optuna.storages.journal import JournalFileBackend

    path = tmp_path / "j.log"
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    trial = optuna.create_study(study_name="journaled", storage=storage).ask()
    trial.set_user_attr("host", "there")
    trial.set_user_attr("pid", 4242)
    storage.set_trial_system_attr(trial._trial_id, "autotune:beat", time.time() - 7)
    result = run_module("autotune.status", "--storage", f"journal:///{path}")
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("journaled") and "4242"
                in x)
    assert line.split()[-2:] in (["7s", "ago"], ["8s", "ago"]), line
