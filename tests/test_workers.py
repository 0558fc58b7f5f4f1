"""Several worker processes on one study: exact totals, dead workers, retries from checkpoints."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import types
import uuid

import optuna
import pytest

from autotune.errors import UsageError
from autotune.launch import _local as workers
from autotune.storage._storage import open_storage
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


def test_only_single_threaded_cpu_workers_are_forked(monkeypatch):
    monkeypatch.delitem(sys.modules, "numba", raising=False)  # other tests may have loaded it
    one_thread = workers.plan(2, "cpu", n_gpus=0, n_cores=2)
    assert workers.can_fork(one_thread)
    monkeypatch.setitem(sys.modules, "numba", types.ModuleType("numba"))
    assert not workers.can_fork(one_thread)  # its OpenMP pool may have started here
    monkeypatch.delitem(sys.modules, "numba")
    assert not workers.can_fork(workers.plan(2, "cpu", n_gpus=0, n_cores=4))  # 2 threads each
    assert not workers.can_fork(workers.plan(2, "cuda", n_gpus=1, n_cores=2))
    monkeypatch.setenv(workers.FORK_ENV, "0")
    assert not workers.can_fork(one_thread)
    monkeypatch.setenv(workers.FORK_ENV, "yes")
    with pytest.raises(UsageError, match=r"\$AUTOTUNE_FORK_WORKERS must be 0 or 1, got 'yes'"):
        workers.can_fork(one_thread)


def test_forked_workers_exit_codes_come_back_as_spawned_ones_do(tmp_path):
    marker = tmp_path / "ran"

    def writes_and_returns(code: int):  # type: ignore[no-untyped-def]
        def target() -> int:
            (marker.parent / f"{marker.name}-{code}-{os.getpid()}").write_text(str(os.getsid(0)))
            return code
        return target

    def exits_2() -> int:
        raise SystemExit(2)

    def fails() -> int:
        raise RuntimeError("a bug in a worker")

    def killed() -> int:
        os.kill(os.getpid(), signal.SIGKILL)
        return 0

    codes = workers.fork([writes_and_returns(0), writes_and_returns(1), exits_2, fails, killed])
    assert codes == [0, 1, 2, 1, -signal.SIGKILL]
    written = sorted(tmp_path.glob("ran-*"))
    assert [p.name.split("-")[1] for p in written] == ["0", "1"]
    for path in written:  # each child ran in a process (and session) of its own
        pid = int(path.name.split("-")[2])
        assert pid != os.getpid() and int(path.read_text()) == pid


def test_fork_forwards_ctrl_c_to_the_workers_and_raises_it_after_they_exit(tmp_path):
    started = tmp_path / "started"

    def waits_for_sigint() -> int:
        try:
            started.touch()
            time.sleep(60)
            return 0
        except KeyboardInterrupt:
            return 130

    def interrupt_once_started() -> None:
        if started.exists():
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        workers.fork([waits_for_sigint], tick=interrupt_once_started, tick_s=0.2)
    assert started.exists()


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
    assert re.search(r"^w[0-3] trial", err, re.MULTILINE)
    # one thread each (up to 7 cores) is forked; more threads each, new processes
    how = "forks of this process" if workers.n_cores() < 8 else "new processes"
    assert f"starting 4 workers ({how})" in err
    assert f"study {name}: 10 finished trials" in out
    # workers sample with different seeds: no two trials share their params
    params = [tuple(sorted(t.params.items())) for t in finished]
    assert len(set(params)) == len(params)


CNN_STUDY = """
dataset = "digits"
model = "cnn"
[budget]
n_trials = 4
max_epochs = 2
[fixed]
width = 4
depth = 1
batch_size = 64
[space]
lr = { low = 1e-3, high = 1e-1, log = true }
"""


def test_forked_workers_train_cnns_on_the_compiled_loops(sqlite_url, tmp_path):
    """numba's OpenMP pool, started in a fork with more threads than its one, would wait
    forever for the parent's pool threads (it did, before NUMBA_NUM_THREADS=1 in the fork)."""
    spec = write_study(tmp_path, CNN_STUDY, name="cnn")
    proc = start_run("--study", str(spec), "--storage", sqlite_url, "--workers", "2")
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    if workers.n_cores() < 4:  # one thread each: forked
        assert "starting 2 workers (forks of this process)" in err
    assert "CNN blocks on PyTorch ops" not in err  # the compiled loops ran
    assert "study cnn: 4 finished trials" in out


def test_each_forked_worker_reports_its_own_storage_time(sqlite_url, tmp_path):
    """$AUTOTUNE_STORAGE_TIMING (bench_workers' storage share): a forked worker leaves
    without exit handlers, yet writes its own row, counted from its fork, not its parent's."""
    if workers.n_cores() >= 4:
        pytest.skip("workers of one thread each are forked only on fewer than 4 cores")
    spec = write_study(tmp_path, SHARED_STUDY, name="timed")
    timing = tmp_path / "timing.jsonl"
    proc = start_run("--study", str(spec), "--storage", sqlite_url, "--workers", "2",
                     env={"AUTOTUNE_STORAGE_TIMING": str(timing)})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "starting 2 workers (forks of this process)" in err
    rows = [json.loads(line) for line in timing.read_text().splitlines()]
    *children, parent = rows
    assert parent["pid"] == proc.pid and len(children) == 2
    study = optuna.load_study(study_name="timed", storage=sqlite_url)
    # a surplus trial (two workers claimed the last place at once) fails before it runs,
    # with no pid; every trial that ran names its worker
    ran = [t for t in study.trials
           if not t.user_attrs.get("fail_reason", "").startswith("surplus")]
    assert {row["pid"] for row in children} == {t.user_attrs["pid"] for t in ran}
    for row in children:
        assert 0 < row["storage_s"] < row["wall_s"] < parent["wall_s"]


def test_workers_started_as_new_processes_finish_with_exactly_the_total(sqlite_url, tmp_path):
    spec = write_study(tmp_path, SHARED_STUDY, name="spawned")
    proc = start_run("--study", str(spec), "--storage", sqlite_url, "--workers", "2",
                     env={workers.FORK_ENV: "0"})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "starting 2 workers (new processes)" in err
    study = optuna.load_study(study_name="spawned", storage=sqlite_url)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 10  # which worker got how many depends on their start-up
    assert not [t for t in study.trials if t.state.name in ("RUNNING", "WAITING")]
    assert "study spawned: 10 finished trials" in out


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
    pid, host = victim.user_attrs["pid"], victim.user_attrs["host"]
    assert dead.user_attrs["fail_reason"].startswith(
        f"worker {pid} on {host} stopped sending heartbeats at ")
    # marked failed within the grace period (3 s) plus a heartbeat or two of slack
    assert (dead.datetime_complete.timestamp() - time.time()) + (time.monotonic() - killed_at) < 60
    retries = [t for t in study.trials
               if victim.number in t.system_attrs.get("retry_history", [])]
    assert len(retries) == 1
    retry = retries[0]
    assert retry.state.name == "COMPLETE"
    assert retry.params == dead.params
    assert "fail_reason" not in retry.user_attrs and retry.user_attrs["pid"] != pid
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
