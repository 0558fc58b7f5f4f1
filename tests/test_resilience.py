"""A PostgreSQL restart in the middle of a study: workers reconnect, nothing is lost."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid

import optuna
import pytest

from autotune.storage._storage import open_storage
from tests.conftest import _skip_or_fail, write_study
from tests.test_workers import SHARED_STUDY, start_run


def restart_postgres(action: str = "restart") -> None:
    versions = os.listdir("/etc/postgresql") if os.path.isdir("/etc/postgresql") else []
    if not shutil.which("pg_ctlcluster") or not versions or os.geteuid() != 0:
        _skip_or_fail("restarting PostgreSQL needs root and pg_ctlcluster")
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[0], "main",
                    action], check=True, capture_output=True, timeout=120)


def test_asking_for_a_trial_while_postgresql_is_down_waits_for_it(postgres_url):
    # Optuna's cache creates trials through the storage's private _create_new_trial
    study = optuna.create_study(study_name=f"down-{uuid.uuid4().hex[:8]}",
                                storage=open_storage(postgres_url))
    study.tell(study.ask(), 1.0)  # connected and pooled before the server goes away
    restart_postgres("stop")
    back = threading.Timer(8.0, restart_postgres, args=("start",))
    back.start()
    try:  # what study.ask() calls once it has read the queue
        trial_id = study._storage.create_new_trial(study._study_id)
    finally:
        back.join()
    study.tell(study.ask(), 3.0)
    study._storage.set_trial_state_values(trial_id, optuna.trial.TrialState.COMPLETE, [2.0])
    stored = optuna.load_study(study_name=study.study_name, storage=postgres_url).trials
    assert [(t.number, t.state.name, t.value) for t in stored] == [
        (0, "COMPLETE", 1.0), (1, "COMPLETE", 2.0), (2, "COMPLETE", 3.0)]


def test_a_postgresql_restart_mid_study_does_not_stop_the_workers(postgres_url, tmp_path):
    study_file = write_study(tmp_path, SHARED_STUDY.replace("n_trials = 10", "n_trials = 14"),
                             name="restart")
    name = f"restart-{uuid.uuid4().hex[:8]}"
    proc = start_run("--study", str(study_file), "--study-name", name, "--storage",
                     postgres_url, "--workers", "2", "--artifacts", str(tmp_path / "art"))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            study = optuna.load_study(study_name=name, storage=postgres_url)
            if sum(t.state.is_finished() for t in study.trials) >= 3:
                break
        except KeyError:
            pass
        time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("the study never got going")
    restart_postgres()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    study = optuna.load_study(study_name=name, storage=postgres_url)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 14
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    assert f"study {name}: 14 finished trials" in out
