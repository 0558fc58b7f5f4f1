"""Several worker processes on one study: exact totals, dead workers, retries from checkpoints."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pytest

from autotune import workers
from autotune.storage import open_storage
from tests.conftest import REPO, write_study

SHARED_STUDY = """
dataset = "digits"
model = "mlp"
seed = 1
[budget]
n_trials = 10
max_epochs = 20   # ~0.1 s a trial: long enough that every process started gets some
[sampler]
name = "tpe"
n_startup_trials = 4
[pruner]
name = "median"
n_startup_trials = 3
[fixed]
width = 32
depth = 1
[space]
lr = { low = 1e-4, high = 0.3, log = true }
optimizer = { choices = ["sgd", "adam"] }
batch_size = { choices = [32, 64] }
"""

# Slow enough per epoch (a wide MLP, small batches) to kill a worker in the middle of a trial.
SLOW_STUDY = """
dataset = "digits"
model = "mlp"
[budget]
n_trials = 2
max_epochs = 6
[pruner]
name = "none"
[fixed]
width = 1024
depth = 3
batch_size = 8
optimizer = "sgd"
momentum = 0.9
[space]
lr = { low = 1e-3, high = 1e-2, log = true }
"""

FAST_HEARTBEAT = {"AUTOTUNE_HEARTBEAT_S": "1", "AUTOTUNE_GRACE_S": "3"}


def start_run(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "autotune.run", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def test_plan_divides_cores_and_spreads_workers_over_gpus():
    cpu = workers.plan(4, "auto", n_gpus=0, n_cores=2)
    assert [p.device for p in cpu] == ["cpu"] * 4 and {p.threads for p in cpu} == {1}
    assert workers.plan(2, "cpu", n_gpus=0, n_cores=8)[0].threads == 4
    gpu = workers.plan(5, "auto", n_gpus=2, n_cores=16)
    assert [p.device for p in gpu] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert workers.plan(2, "cpu", n_gpus=2, n_cores=4)[1].device == "cpu"


def test_worker_command_pins_each_worker_to_its_gpu():
    cmd, env = workers.worker_command(["--study", "x"], workers.Placement(3, "cuda:1", 2))
    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    assert cmd[-6:] == ["--worker-index", "3", "--threads", "2", "--device", "cuda"]


def test_four_workers_finish_with_exactly_the_total(any_storage_url, tmp_path):
    storage_url = any_storage_url
    spec = write_study(tmp_path, SHARED_STUDY, name="shared")
    name = f"shared-{uuid.uuid4().hex[:8]}"
    proc = start_run("--study", str(spec), "--study-name", name, "--storage", storage_url,
                     "--workers", "4")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    study = optuna.load_study(study_name=name, storage=open_storage(storage_url))
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 10
    assert not [t for t in study.trials if t.state.name in ("RUNNING", "WAITING")]
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(len(numbers)))
    for trial in study.trials:  # anything else failed is surplus, never trained
        if trial.state.name == "FAIL":
            assert trial.user_attrs["fail_reason"].startswith("surplus")
    # several processes did the work, each trial says where it ran
    assert len({t.user_attrs["pid"] for t in finished}) >= 2
    assert all(t.user_attrs["host"] and t.user_attrs["device"] == "cpu" for t in finished)
    # each worker's lines carry its index (which workers got trials depends on timing)
    assert re.search(r"^w[0-3] trial", err, re.MULTILINE) and "starting 4 workers" in err
    assert f"study {name}: 10 finished trials" in out
    # workers sample with different seeds: no two trials share their params
    params = [tuple(sorted(t.params.items())) for t in finished]
    assert len(set(params)) == len(params)


def test_a_killed_worker_s_trial_is_retried_from_its_last_checkpoint(sqlite_url, tmp_path):
    spec = write_study(tmp_path, SLOW_STUDY, name="slow")
    proc = start_run("--study", str(spec), "--storage", sqlite_url, "--workers", "2",
                     "--checkpoint-every", "0", env=FAST_HEARTBEAT)
    victim = wait_for_trial_with_epochs(sqlite_url, "slow", n_epochs=2, timeout_s=180)
    os.kill(victim.user_attrs["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    study = optuna.load_study(study_name="slow", storage=sqlite_url)
    dead = study.trials[victim.number]
    assert dead.state.name == "FAIL"
    assert dead.datetime_complete is not None
    # marked failed within the grace period (3 s) plus a heartbeat or two of slack
    assert (dead.datetime_complete.timestamp() - time.time()) + (time.monotonic() - killed_at) < 60
    retries = [t for t in study.trials
               if victim.number in t.system_attrs.get("retry_history", [])]
    assert len(retries) == 1
    retry = retries[0]
    assert retry.state.name == "COMPLETE"
    assert retry.params == dead.params
    resumed = retry.user_attrs["resumed_from"]
    assert resumed["trial"] == victim.number and resumed["epoch"] >= 2
    assert sorted(retry.intermediate_values) == list(range(1, 7))  # the curve carries on
    for epoch in range(1, resumed["epoch"] + 1):
        assert retry.intermediate_values[epoch] == dead.intermediate_values[epoch]
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 2


def wait_for_trial_with_epochs(url: str, name: str, n_epochs: int, timeout_s: float
                               ) -> optuna.trial.FrozenTrial:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            study = optuna.load_study(study_name=name, storage=url)
        except KeyError:
            time.sleep(0.5)
            continue
        for trial in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
            if len(trial.intermediate_values) >= n_epochs and "pid" in trial.user_attrs:
                return trial
        time.sleep(0.2)
    pytest.fail(f"no trial of {name} reached {n_epochs} epochs within {timeout_s} s")


def test_sigterm_on_a_single_run_closes_the_running_trial(sqlite_url, tmp_path):
    spec = write_study(tmp_path, SLOW_STUDY, name="term")
    proc = start_run("--study", str(spec), "--storage", sqlite_url)
    wait_for_trial_with_epochs(sqlite_url, "term", n_epochs=1, timeout_s=120)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    study = optuna.load_study(study_name="term", storage=sqlite_url)
    assert [t.state.name for t in study.trials] == ["FAIL"]


def test_a_second_machine_joins_by_running_the_same_command(postgres_url, tmp_path):
    """Two independent runs (as on two machines) share one PostgreSQL study."""
    spec = write_study(tmp_path, SHARED_STUDY, name="joined")
    name = f"joined-{uuid.uuid4().hex[:8]}"
    args = ("--study", str(spec), "--study-name", name, "--storage", postgres_url,
            "--artifacts", str(tmp_path / "artifacts"))
    first, second = start_run(*args), start_run(*args)
    for proc in (first, second):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    study = optuna.load_study(study_name=name, storage=postgres_url)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 10
    assert len({t.user_attrs["pid"] for t in finished}) == 2
