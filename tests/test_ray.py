"""`--launcher ray`: workers placed on a real Ray cluster of two nodes, started here on
127.0.0.1 (`ray start --head`, then a second `ray start --address`) and stopped by the
process groups the test started; studies on the real PostgreSQL server, or behind a real
gRPC storage proxy."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from tests.conftest import REPO
from tests.test_plugins import run, run_without
from tests.test_proxy import free_port, proxy_on

RAY = str(Path(sys.executable).parent / "ray")
# a test node's environment: no usage stats; no token auth, which `ray start` turns on by
# itself where ~/.ray/auth_token exists (a cluster Ray started for a plain ray.init() wrote
# it), and then a second `ray start --address` is refused ("InvalidAuthToken")
RAY_NODE_ENV = {"PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_AUTH_MODE": "disabled"}

# a user's own model whose forward takes a while, so that four workers share the trials
SLOW_MODEL = '''
import time

from torch import nn


class Slow(nn.Module):
    def __init__(self, n_in, hidden, n_out):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(n_in, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_out))

    def forward(self, x):
        time.sleep(0.01)
        return self.net(x)


def build(params, info):
    n_in = 1
    for size in info.input_shape:
        n_in *= size
    return Slow(n_in, params["hidden"], info.n_outputs)
'''

USER_STUDY = '''
name = "on-ray"
dataset = "digits"
model = "code/model.py:build"
seed = 3
[budget]
n_trials = 12
max_epochs = 2
[sampler]
name = "random"
[pruner]
name = "none"
[fixed]
batch_size = 64
[space]
hidden = { choices = [16, 32] }
lr = { low = 1e-3, high = 1e-1, log = true }
'''

# a user's own training loop: slow epochs, a checkpoint after each, restored by a retry
SLOW_TRAIN = '''
import time

import autotune


def train(params, trial):
    state = trial.restore() or {"epoch": 0, "total": 0.0}
    for epoch in range(state["epoch"] + 1, trial.max_epochs + 1):
        time.sleep(1.0)
        state = {"epoch": epoch, "total": state["total"] + params["x"]}
        trial.report(epoch, state["total"])
        trial.checkpoint(state)
    return state["total"]
'''

LOOP_STUDY = '''
name = "loop-on-ray"
train = "train.py:train"
metric = "score"
direction = "maximize"
[budget]
n_trials = 4
max_epochs = 4
[sampler]
name = "random"
[pruner]
name = "none"
[space]
x = { low = 0.0, high = 1.0 }
'''


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A two-node Ray cluster of one CPU per node on 127.0.0.1; its address."""
    port = free_port()
    # each node its own temp dir (sockets' paths must stay short), as on two machines: nodes
    # sharing one would each tail the other's worker logs, and every line reach the driver twice
    temps = [tempfile.mkdtemp(prefix="rt", dir="/tmp") for _ in range(2)]
    env = {**os.environ, **RAY_NODE_ENV}
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1",
              "--object-store-memory", str(80 * 2**20), "--block"]
    log = open(Path(temps[0]) / "start.log", "w")  # noqa: SIM115 - closed at teardown
    started = []
    try:
        started.append(subprocess.Popen(
            [RAY, "start", "--head", "--port", str(port), "--include-dashboard=false",
             "--temp-dir", temps[0], *common], env=env, stdout=log, stderr=log,
            start_new_session=True))
        _wait_for(lambda: _accepts(port), 60, "the head node")
        started.append(subprocess.Popen(
            [RAY, "start", "--address", f"127.0.0.1:{port}", "--temp-dir", temps[1], *common],
            env=env, stdout=log, stderr=log, start_new_session=True))
        address = f"127.0.0.1:{port}"
        _wait_for(lambda: _nodes(address, env) == 2, 90, "the second node")
        yield address
    finally:
        for proc in reversed(started):  # each `ray start --block` leads its process group
            _stop_group(proc)
        log.close()
        left = subprocess.run(["pgrep", "-f", "|".join(temps)], capture_output=True,
                              text=True).stdout
        assert not left.strip(), f"Ray processes left running: {left}"


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _nodes(address: str, env: dict[str, str]) -> int:
    code = (f"import ray; ray.init(address={address!r}, logging_level='ERROR'); "
            "print(sum(n['Alive'] for n in ray.nodes()))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60)
    return int(done.stdout.strip() or 0)


def _wait_for(ready, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not start within {timeout_s} s")
        time.sleep(0.5)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        # every process of the group: raylet, GCS, workers (Ray's GCS outlives a SIGTERM by
        # over 20 s here; a throwaway cluster needs no graceful stop)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass
    try:  # the workers Ray started in the group, should any outlive their raylet
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder / "study.toml"


FAST_ENV = {"AUTOTUNE_HEARTBEAT_S": "1", "AUTOTUNE_GRACE_S": "3", "RAY_COLOR_PREFIX": "0"}


def test_four_ray_workers_train_a_user_model_to_the_exact_total_on_both_nodes(
        cluster, postgres_url, tmp_path):
    study_file = _write(tmp_path / "project", {"study.toml": USER_STUDY,
                                               "code/model.py": SLOW_MODEL})
    elsewhere = tmp_path / "elsewhere"  # the folder reaches the workers, not this cwd
    elsewhere.mkdir()
    done = run("--study", str(study_file), "--storage", postgres_url, "--launcher", "ray",
               "--ray-address", cluster, "--workers", "4", "--cpus-per-trial", "0.5",
               cwd=elsewhere, env=FAST_ENV)
    assert done.returncode == 0, done.stderr
    assert f"joined the Ray cluster at {cluster}: 2 node(s)" in done.stderr
    assert "placing 4 worker(s) on the Ray cluster (2 node(s)), each asking for 0.5 CPU, " \
        "0 GPU" in done.stderr
    study = optuna.load_study(study_name="on-ray", storage=postgres_url)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 12  # the exact study-wide total, no pruner
    # four workers may each claim one surplus trial, failed unrun; nothing else
    others = [t for t in study.trials if t.state.name != "COMPLETE"]
    assert all(t.state.name == "FAIL" and t.user_attrs["fail_reason"].startswith("surplus")
               for t in others), [(t.number, t.state.name, t.user_attrs) for t in others]
    nodes = {t.user_attrs["node"] for t in complete}
    assert len(nodes) == 2, nodes  # trials ran on both nodes
    assert all(len(node) == 56 for node in nodes)  # Ray's node ids (hex)
    assert "test accuracy of best configuration" in done.stdout
    for trial in complete:  # every trial's own line once, none folded by Ray's log dedup
        lines = re.findall(rf"^.*w\d trial +{trial.number} COMPLETE .*$", done.stderr, re.M)
        assert len(lines) == 1, (trial.number, lines)
    assert "across cluster" not in done.stderr and "\x1b[" not in done.stderr


def test_a_killed_ray_worker_s_trial_is_retried_from_its_checkpoint_behind_the_proxy(
        cluster, postgres_url, tmp_path):
    """The worker is SIGKILLed mid-trial; its trial beats through the gRPC proxy (which
    carries no Optuna heartbeats), is found silent, failed and retried from its checkpoint."""
    study_file = _write(tmp_path / "project", {"study.toml": LOOP_STUDY,
                                               "train.py": SLOW_TRAIN})
    with proxy_on(postgres_url) as grpc_url:
        driver = _start_on_two_workers(study_file, grpc_url, cluster, tmp_path)
        try:
            victim = _running_trial_with_checkpoint(postgres_url, "loop-on-ray", driver)
            os.kill(victim.user_attrs["pid"], signal.SIGKILL)
            out, err = driver.communicate(timeout=240)
        finally:
            if driver.poll() is None:
                driver.kill()
        assert driver.returncode == 0, err
        assert "worker w" in err and "was killed by signal 9" in err
        study = optuna.load_study(study_name="loop-on-ray", storage=postgres_url)
    dead = study.trials[victim.number]
    assert dead.state.name == "FAIL"
    assert "stopped sending heartbeats" in dead.user_attrs["fail_reason"]
    assert "its worker's clock" in dead.user_attrs["fail_reason"]
    retry = next(t for t in study.trials
                 if victim.number in t.system_attrs.get("retry_history", []))
    assert retry.state.name == "COMPLETE"
    assert retry.params == dead.params
    resumed = retry.user_attrs["resumed_from"]
    assert resumed["trial"] == victim.number and resumed["epoch"] >= 1
    for epoch in range(1, resumed["epoch"] + 1):  # the dead trial's epochs carry on
        assert retry.intermediate_values[epoch] == dead.intermediate_values[epoch]
    assert retry.value == pytest.approx(4 * retry.params["x"])
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 4
    assert not [t for t in study.trials if t.state.name in ("RUNNING", "WAITING")]


def _start_on_two_workers(study_file: Path, storage: str, cluster: str, cwd: Path
                          ) -> subprocess.Popen[str]:
    """`autotune run` placing 2 workers of half a CPU on the cluster, left running."""
    return subprocess.Popen(
        [sys.executable, "-m", "autotune.run", "--study", str(study_file), "--storage",
         storage, "--launcher", "ray", "--ray-address", cluster, "--workers", "2",
         "--cpus-per-trial", "0.5"], cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO),
                                                   **FAST_ENV},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _running_trial_with_checkpoint(url: str, name: str, driver: subprocess.Popen[str]
                                   ) -> optuna.trial.FrozenTrial:
    """A running trial that reported (and checkpointed) an epoch: the one to kill."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert driver.poll() is None, driver.communicate()
        try:
            trials = optuna.load_study(study_name=name, storage=url).trials
        except KeyError:  # not created yet
            trials = []
        for trial in trials:
            if trial.state.name == "RUNNING" and 2 in trial.intermediate_values:
                return trial
        time.sleep(0.2)
    raise TimeoutError("no trial reached its second epoch")


def test_ctrl_c_cancels_the_ray_workers_and_leaves_no_trial_running(cluster, postgres_url,
                                                                    tmp_path):
    study_file = _write(tmp_path / "project", {"study.toml": LOOP_STUDY.replace(
        "loop-on-ray", "stopped-on-ray"), "train.py": SLOW_TRAIN})
    driver = _start_on_two_workers(study_file, postgres_url, cluster, tmp_path)
    try:
        _running_trial_with_checkpoint(postgres_url, "stopped-on-ray", driver)
        driver.send_signal(signal.SIGINT)
        out, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 130, err
    assert "interrupted: finished trials are saved" in err
    study = optuna.load_study(study_name="stopped-on-ray", storage=postgres_url)
    assert not [t for t in study.trials if t.state.name in ("RUNNING", "WAITING")]
    cut = [t for t in study.trials if t.user_attrs.get("interrupted")]
    assert cut and all(t.state.name == "FAIL" for t in cut)


def test_ray_bad_input_is_refused_in_one_line_before_any_trial(cluster, tmp_path):
    url = f"sqlite:///{tmp_path / 'kept.db'}"
    store = optuna.storages.RDBStorage(url)
    optuna.create_study(study_name="other", storage=store)
    store.engine.dispose()
    before = Path(tmp_path / "kept.db").read_bytes()
    cases = [
        (["--ray-address", f"127.0.0.1:{free_port()}"], "error: no Ray cluster answers at "
         "127.0.0.1:"),
        (["--ray-address", cluster, "--gpus-per-trial", "0.5"], "error: no node of the Ray "
         "cluster can run a worker asking for 1 CPU, 0.5 GPU: its 2 node(s) have 1 CPU, 0 GPU; "
         "1 CPU, 0 GPU; lower cpus_per_trial or gpus_per_trial"),
        (["--ray-address", cluster, "--cpus-per-trial", "2"], "error: no node of the Ray "
         "cluster can run a worker asking for 2 CPU, 0 GPU"),
    ]
    for flags, message in cases:
        done = run("--study", "digits", "--storage", url, "--launcher", "ray", *flags,
                   cwd=tmp_path, timeout=120)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), lines
        assert Path(tmp_path / "kept.db").read_bytes() == before
    # a study folder over Ray's package limit (lowered to 2 MiB here, 512 MiB by default)
    big = tmp_path / "big"
    big.mkdir()
    (big / "study.toml").write_text('name = "big"\ndataset = "digits"\n')
    (big / "data.bin").write_bytes(os.urandom(3 * 2**20))
    done = run("--study", str(big / "study.toml"), "--storage", url, "--launcher", "ray",
               "--ray-address", cluster, cwd=tmp_path, timeout=120,
               env={"RAY_max_grpc_message_size": str(2 * 2**20)})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        f"error: cannot ship the study file's folder {big} to the Ray cluster's workers: "
        "Package size (3.00MiB) exceeds the maximum size of 2.00MiB; leave data and other "
        "large files out with a .rayignore (or .gitignore) beside the study file, and read "
        "data from a path every node sees (--data-dir)")
    assert Path(tmp_path / "kept.db").read_bytes() == before
    # --ray-wait: the autoscaler is asked, no node comes, refused after the wait
    done = run("--study", "digits", "--storage", url, "--launcher", "ray", "--ray-address",
               cluster, "--cpus-per-trial", "2", "--ray-wait", "3", cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    waited, refused = done.stderr.strip().splitlines()
    assert waited == ("no node of the Ray cluster can run a worker asking for 2 CPU, 0 GPU yet: "
                      "asked its autoscaler for 1, waiting up to 3 s (--ray-wait)")
    assert refused.startswith("error: no node of the Ray cluster can run a worker asking for "
                              "2 CPU, 0 GPU after waiting 3 s for the autoscaler: its 2 node(s)")
    assert Path(tmp_path / "kept.db").read_bytes() == before
    done = run("--study", "digits", "--storage", url, "--cpus-per-trial", "0.5", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: --cpus-per-trial place workers on a Ray cluster: "
                                   "add --launcher ray, or leave them out")


def test_ray_wait_places_the_workers_on_a_node_that_joins_while_it_waits(cluster, tmp_path):
    """What an autoscaler does, done by hand: a node of 2 CPUs joins while the driver waits
    for one that can run a worker asking for 2 CPUs."""
    url = f"sqlite:///{tmp_path / 'grown.db'}"
    driver = subprocess.Popen(
        [sys.executable, "-m", "autotune.run", "--study", "digits", "--storage", url,
         "--n-trials", "2", "--max-epochs", "1", "--launcher", "ray", "--ray-address",
         cluster, "--cpus-per-trial", "2", "--ray-wait", "120"], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), **FAST_ENV})
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    node = None
    try:
        assert driver.stderr is not None
        before = ""  # what the driver says until it waits (Ray may warn first)
        while "waiting up to 120 s (--ray-wait)" not in before:
            line = driver.stderr.readline()
            assert line, before + (driver.stderr.read() or "")
            before += line
        node = subprocess.Popen(
            [RAY, "start", "--address", cluster, "--num-cpus", "2", "--temp-dir", temp,
             "--node-ip-address", "127.0.0.1", "--object-store-memory", str(80 * 2**20),
             "--block"], env={**os.environ, **RAY_NODE_ENV},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        out, err = driver.communicate(timeout=300)
        assert driver.returncode == 0, err
        assert re.search(r"a node that can run a worker joined after \d+ s", err), err
        assert "joined the Ray cluster at " + cluster + ": 3 node(s)" in err
        study = optuna.load_study(study_name="digits", storage=url)
        complete = [t for t in study.trials if t.state.name == "COMPLETE"]
        assert len(complete) == 2
        big = _node_ids(cluster, cpus=2.0)
        assert len(big) == 1 and {t.user_attrs["node"] for t in complete} == big
    finally:
        if driver.poll() is None:
            driver.kill()
        if node is not None:
            _stop_group(node)
    left = subprocess.run(["pgrep", "-f", temp], capture_output=True, text=True).stdout
    assert not left.strip(), f"Ray processes left running: {left}"


def _node_ids(address: str, cpus: float) -> set[str]:
    """The ids of the cluster's live nodes with `cpus` CPUs."""
    code = (f"import ray; ray.init(address={address!r}, logging_level='ERROR'); "
            "print(' '.join(n['NodeID'] for n in ray.nodes() if n['Alive'] and "
            f"n['Resources'].get('CPU') == {cpus}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    return set(done.stdout.split())


def test_launcher_ray_without_ray_installed_says_how_to_install_it(tmp_path):
    done = run_without("ray", "--study", "digits", "--launcher", "ray", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: --launcher ray needs Ray, which is not installed: "
                                   "pip install 'autotune[ray]'")
