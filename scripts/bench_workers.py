"""Parallel search throughput: the same study with 1, 2, 4, 8 workers, by storage and launcher.

Configurations (--configs):
  sqlite-local   local worker processes on a SQLite file
  pg-local       local worker processes on PostgreSQL (forks of the first, where allowed)
  pg-spawn       the same, each a new interpreter (AUTOTUNE_FORK_WORKERS=0), as Ray's are
  pg-ray         Ray tasks (--launcher ray) on a one-node Ray cluster started here, PostgreSQL
  proxy-local    local worker processes behind `autotune proxy` (grpc://) on PostgreSQL

Prints trials per minute over the whole run, the ratio to 1 worker of the same
configuration and to pg-local with as many workers, seconds from launch to the workers'
first trial (mean over workers), trials per minute once every worker has started (the
steady rate, start-up left out), the share of worker wall time inside storage calls
(relational storages only), the most PostgreSQL connections autotune's processes held at
once (pg_stat_activity by application_name, sampled every 50 ms) and failed trials.

    python scripts/bench_workers.py                                 # everything (~20 min)
    python scripts/bench_workers.py --configs pg-local,pg-ray --workers 4 --n-trials 40
    python scripts/bench_workers.py --configs proxy-local --workers 16 --max-epochs 1
    python scripts/bench_workers.py --configs pg-local,pg-ray --workers 4 --n-trials 3000 \
        --fixed --rounds 5        # the launchers on equal work, medians of alternated rounds
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy

REPO = Path(__file__).resolve().parent.parent
STUDY = """
dataset = "digits"
model = "mlp"
seed = 0
[budget]
max_epochs = 10
[sampler]
name = "tpe"
n_startup_trials = 5
[pruner]
name = "median"
n_startup_trials = 3
n_warmup_steps = 1
[space]
lr = { low = 1e-4, high = 0.3, log = true }
optimizer = { choices = ["sgd", "adam", "rmsprop"] }
momentum = { low = 0.0, high = 0.9 }
batch_size = { choices = [32, 64, 128] }
width = { low = 32, high = 256, log = true }
"""
CONFIGS = ("sqlite-local", "pg-local", "pg-spawn", "pg-ray", "proxy-local")
PROXY_CONNECTIONS = 4
# --fixed: every trial the same work (no parameter searched, none pruned), so trials/min
# compares the launchers alone, not which widths and batch sizes the sampler happened to try
FIXED_STUDY = """
dataset = "digits"
model = "mlp"
seed = 0
[budget]
max_epochs = 10
[sampler]
name = "random"
[pruner]
name = "none"
[fixed]
lr = 0.0015
optimizer = "adam"
momentum = 0.5
batch_size = 64
width = 64
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4,8", help="comma-separated (default: 1,2,4,8)")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated, of {', '.join(CONFIGS)} (default: all)")
    parser.add_argument("--n-trials", type=int, default=120)
    parser.add_argument("--study", help="a study name or file instead of the built-in digits "
                                        "study, e.g. mnist")
    parser.add_argument("--fixed", action="store_true",
                        help="every trial the same configuration, none pruned: the launchers "
                             "compared on equal work, without the sampler's choices")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the configurations this many times, alternated, and end "
                             "with each one's medians (default: 1)")
    parser.add_argument("--max-epochs", type=int, default=2,
                        help="the study's max_epochs (default: 2: tiny trials show overhead)")
    parser.add_argument("--pg-url", default=os.environ.get(
        "AUTOTUNE_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args(argv)
    counts = [int(k) for k in args.workers.split(",")]
    configs = args.configs.split(",")
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown --configs {', '.join(sorted(unknown))}; of {', '.join(CONFIGS)}")
    if args.fixed and args.study:
        parser.error("--fixed runs its own study; leave out --study")
    print(f"{'config':<12} {'workers':>7} {'wall s':>7} {'trials/min':>10} {'vs 1':>6} "
          f"{'vs pg-local':>11} {'1st trial s':>11} {'steady/min':>10} {'storage %':>9} "
          f"{'db conns':>8} {'failed':>6}", flush=True)
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "study").mkdir()  # its folder alone is shipped to Ray workers
        study_file = Path(tmp) / "study" / "bench.toml"
        study_file.write_text(FIXED_STUDY if args.fixed else STUDY)
        study = args.study or str(study_file)
        extra = ["--max-epochs", str(args.max_epochs)]
        for round_ in range(args.rounds):
            if args.rounds > 1:
                print(f"round {round_ + 1} of {args.rounds}", flush=True)
            local_rates: dict[int, float] = {}
            for config in configs:
                base_rate = None
                with backend(config, Path(tmp), args.pg_url) as (url, flags):
                    if config == "pg-ray" and round_ == 0:
                        address = flags[flags.index("--ray-address") + 1]
                        probes = [(k, *placement_s(address, study_file.parent, k))
                                  for k in counts]
                        print("ray placement, a new job's tasks from submission to running "
                              "(mean; all running; all running / tasks): " + ", ".join(
                                  f"{k} task(s) {mean:.2f} s; {last:.2f} s; {last / k:.2f} s"
                                  for k, mean, last in probes), flush=True)
                    for k in counts:
                        row = run_once(config, url, flags, k, args.n_trials, study, extra,
                                       Path(tmp), args.pg_url)
                        runs.setdefault((config, k), []).append(row)
                        base_rate = base_rate or row["rate"]
                        if config == "pg-local":
                            local_rates[k] = row["rate"]
                        print_row(config, k, row, base_rate, local_rates.get(k))
    if args.rounds > 1:
        print_medians(runs, args.rounds)
    return 0


def print_row(config: str, k: int, row: dict[str, Any], base_rate: float,
              local_rate: float | None) -> None:
    vs_local = f"{row['rate'] / local_rate:>10.2f}x" if local_rate else f"{'-':>11}"
    storage = (f"{row['storage_pct']:>8.1f}%" if row["storage_pct"] is not None
               else f"{'-':>9}")
    conns = f"{row['conns']:>8}" if row["conns"] is not None else f"{'-':>8}"
    steady = f"{row['steady']:>10.1f}" if row["steady"] is not None else f"{'-':>10}"
    print(f"{config:<12} {k:>7} {row['wall_s']:>7.1f} {row['rate']:>10.1f} "
          f"{row['rate'] / base_rate:>5.2f}x {vs_local} {row['first_s']:>11.2f} {steady} "
          f"{storage} {conns} {row['failed']:>6}", flush=True)


def print_medians(runs: dict[tuple[str, int], list[dict[str, Any]]], rounds: int) -> None:
    """Each configuration's median over the rounds, and its ratio to pg-local's median."""
    print(f"\nmedians over {rounds} rounds, each round's value in brackets")
    print(f"{'config':<12} {'workers':>7} {'steady/min':>10} {'vs pg-local':>11}  rounds")
    for (config, k), rows in runs.items():
        steadies = [r["steady"] if r["steady"] is not None else r["rate"] for r in rows]
        local = runs.get(("pg-local", k))
        ratio = "-"
        if local:
            base = statistics.median(r["steady"] if r["steady"] is not None else r["rate"]
                                     for r in local)
            ratio = f"{statistics.median(steadies) / base:.3f}x"
        print(f"{config:<12} {k:>7} {statistics.median(steadies):>10.1f} {ratio:>11}  ["
              + " / ".join(f"{v:,.0f}" for v in steadies) + "]", flush=True)


@contextlib.contextmanager
def backend(config: str, tmp: Path, pg_url: str) -> Iterator[tuple[str, list[str]]]:
    """The storage URL and launcher flags of a configuration, with its proxy or Ray cluster
    running meanwhile."""
    if config == "sqlite-local":
        yield "", []
    elif config in ("pg-local", "pg-spawn"):
        yield pg_url, []
    elif config == "proxy-local":
        with proxy(pg_url) as url:
            yield url, []
    else:
        with ray_cluster(tmp) as address:
            yield pg_url, ["--launcher", "ray", "--ray-address", address]


PLACEMENT_PROBE = """
import os, sys, time, ray
address, folder, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
ray.init(address=address, logging_level="ERROR", runtime_env={
    "working_dir": folder, "env_vars": {"AUTOTUNE_PROBE": "1"}})
@ray.remote(num_cpus=len(os.sched_getaffinity(0)) / k, max_retries=0)
def started():
    return time.time()
submitted = time.time()
waits = [t - submitted for t in ray.get([started.remote() for _ in range(k)])]
print(sum(waits) / k, max(waits))
"""


def placement_s(address: str, folder: Path, k: int) -> tuple[float, float]:
    """Seconds from submitting k tasks of a new job (a runtime_env like autotune's) to
    each one running: the mean over the tasks, and until the last one runs. What Ray adds
    before a worker's own start."""
    done = subprocess.run([sys.executable, "-c", PLACEMENT_PROBE, address, str(folder), str(k)],
                          capture_output=True, text=True, env={**os.environ,
                                                               "RAY_USAGE_STATS_ENABLED": "0"})
    if done.returncode != 0:
        sys.exit(f"placement probe failed:\n{done.stderr[-2000:]}")
    mean, last = done.stdout.strip().splitlines()[-1].split()
    return float(mean), float(last)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{proc.args} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"{proc.args} did not listen on {port} within 60 s")


@contextlib.contextmanager
def proxy(pg_url: str) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "autotune", "proxy", "--storage", pg_url,
                             "--port", str(port), "--connections", str(PROXY_CONNECTIONS)],
                            cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proc)
        yield f"grpc://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


@contextlib.contextmanager
def ray_cluster(tmp: Path) -> Iterator[str]:
    """One Ray node with this machine's cores, stopped by its process group at the end."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="rb", dir="/tmp")
    ray = str(Path(sys.executable).parent / "ray")
    proc = subprocess.Popen(
        [ray, "start", "--head", "--port", str(port), "--num-cpus",
         str(len(os.sched_getaffinity(0))), "--node-ip-address", "127.0.0.1",
         "--include-dashboard=false", "--temp-dir", temp, "--object-store-memory",
         str(100 * 2**20), "--block"], env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_port(port, proc)
        time.sleep(3)  # the raylet registers a moment after the GCS listens
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


class ConnectionCount:
    """The most connections to the PostgreSQL database seen at once (pg_stat_activity)."""

    def __init__(self, url: str) -> None:
        # autocommit: PostgreSQL keeps one snapshot of pg_stat_activity per transaction
        self.engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> ConnectionCount:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.engine.dispose()

    def _sample(self) -> None:
        query = sqlalchemy.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :db "
                                "AND application_name LIKE 'autotune%'")
        with self.engine.connect() as conn:
            while not self._stop.wait(0.05):
                found = conn.execute(query, {"db": self.engine.url.database}).scalar()
                self.most = max(self.most, int(found or 0))


def run_once(config: str, url: str, flags: list[str], n_workers: int, n_trials: int,
             study: str, extra: list[str], tmp: Path, pg_url: str) -> dict[str, Any]:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    url = url or f"sqlite:///{tmp / (name + '.db')}"
    timing = tmp / f"{name}.timing"
    env = {**os.environ, "AUTOTUNE_STORAGE_TIMING": str(timing), "RAY_COLOR_PREFIX": "0"}
    if config == "pg-spawn":
        env["AUTOTUNE_FORK_WORKERS"] = "0"
    if config == "pg-ray":
        cpus = len(os.sched_getaffinity(0)) / n_workers
        flags = [*flags, "--workers", str(n_workers), "--cpus-per-trial", f"{cpus:g}"]
    else:
        flags = [*flags, "--workers", str(n_workers)]
    launched = dt.datetime.now()
    started = time.perf_counter()
    counting = ConnectionCount(pg_url) if config != "sqlite-local" else None
    with counting or contextlib.nullcontext():
        result = subprocess.run(
            [sys.executable, "-m", "autotune.run", "--study", study, "--study-name", name,
             "--storage", url, "--n-trials", str(n_trials), "--artifacts",
             str(tmp / "artifacts"), *flags, *extra],
            cwd=REPO, capture_output=True, text=True, env=env)
    wall_s = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"run failed ({config}, {n_workers} workers):\n{result.stderr[-2000:]}")
    read_url = pg_url if config != "sqlite-local" else url
    trials = optuna.load_study(study_name=name, storage=read_url).trials
    failed = sum(t.state.name == "FAIL" and not str(
        t.user_attrs.get("fail_reason", "")).startswith("surplus") for t in trials)
    firsts: dict[object, dt.datetime] = {}  # each worker's first trial start
    for trial in trials:
        pid, start = trial.user_attrs.get("pid"), trial.datetime_start
        if pid is not None and start is not None:
            firsts[pid] = min(firsts.get(pid, start), start)
    first_s = (sum((s - launched).total_seconds() for s in firsts.values()) / len(firsts)
               if firsts else float("nan"))
    steady = None  # finished trials per minute once the last worker started its first trial
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    if firsts and ends:
        all_in, last = max(firsts.values()), max(ends)
        span = (last - all_in).total_seconds()
        if span >= 2.0:
            steady = sum(end > all_in for end in ends) / span * 60
    storage_pct = None
    if timing.exists():  # relational storages time their calls; the gRPC client does not
        rows = [json.loads(line) for line in timing.read_text().splitlines()]
        workers = [r for r in rows if r["pid"] != rows[-1]["pid"]] or rows
        storage_pct = 100 * sum(r["storage_s"] for r in workers) / sum(
            r["wall_s"] for r in workers)
    if config != "sqlite-local":
        optuna.delete_study(study_name=name, storage=pg_url)
    return {"wall_s": wall_s, "rate": n_trials / wall_s * 60, "first_s": first_s,
            "steady": steady,
            "storage_pct": storage_pct, "conns": counting.most if counting else None,
            "failed": failed}


if __name__ == "__main__":
    sys.exit(main())
