"""K workers placed on a Ray cluster (`--launcher ray`): each a Ray task that runs autotune's
worker loop (`autotune run ... --workers 1`) against the shared storage, as a local worker
process does, so samplers, pruners, the study-wide total, heartbeats and checkpoint resume
work the same. Ray only places the workers, with the CPUs and GPUs (fractions allowed)
each asks for; the study file's folder reaches them as the job's `runtime_env` working_dir.

Ray is an optional extra (`pip install 'autotune[ray]'`), imported only here.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.errors import UsageError

INSTALL = "pip install 'autotune[ray]'"
ADDRESS_ENV = "RAY_ADDRESS"  # Ray's own variable
NODE_ENV = "AUTOTUNE_NODE"  # set in a Ray worker: its node id, recorded on each trial
CONNECT_S = 5.0  # a cluster address that accepts no connection within this is unreachable
CANCEL_WAIT_S = 60.0  # after Ctrl-C, how long cancelled workers get to close their trials
NODE_POLL_S = 2.0  # --ray-wait: how often the live nodes are looked at again
# not shipped with the study file's folder: stores, logs and what runs write beside it
EXCLUDES = ["*.db", "*.db-wal", "*.db-shm", "*.db-journal", "*.log", "__pycache__/", ".git/",
            "autotune-artifacts/", "*.artifacts/", "mlruns/", "mlartifacts/", "runs/", ".venv/"]
KILLED = -9  # the exit code of a worker Ray lost (its process or node died)


@dataclass(frozen=True)
class Resources:
    """What one worker asks the cluster for."""

    cpus: float
    gpus: float

    def __str__(self) -> str:
        return f"{self.cpus:g} CPU, {self.gpus:g} GPU"


def _driver_settings() -> None:
    """Ray's own switches for how the workers' lines reach this driver, set before Ray is
    imported (it reads them once, then): every trial's line is shown, not folded by Ray's
    dedup into "[repeated Nx across cluster]" (trial lines differ only in their numbers);
    no colour codes where stderr is not a terminal. A value the user set is kept."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not sys.stderr.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")


def check_installed() -> None:
    """UsageError (exit 2) saying how to install Ray when it is missing."""
    _driver_settings()
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UsageError(f"--launcher ray needs Ray, which is not installed: {INSTALL}"
                         ) from None


def resolve_address(flag: str | None) -> str | None:
    """--ray-address, else $RAY_ADDRESS, else None (Ray's default: the cluster started on
    this machine by `ray start`, else a new one of this machine alone)."""
    return flag or os.environ.get(ADDRESS_ENV) or None


def connect(address: str | None, working_dir: Path | None, env_vars: dict[str, str]) -> int:
    """Join the cluster (checked to answer first, so a wrong address fails in seconds, not
    minutes); the job ships `working_dir` and `env_vars` to every worker. Returns the number
    of live nodes. UsageError for an unreachable address."""
    _driver_settings()
    import ray

    if address and address not in ("auto", "local"):
        _check_reachable(address)
    runtime_env: dict[str, Any] = {"env_vars": env_vars}
    if working_dir is not None:
        runtime_env.update(working_dir=str(working_dir), excludes=EXCLUDES)
    try:
        ray.init(address=address, runtime_env=runtime_env, logging_level=logging.ERROR,
                 log_to_driver=True)
    except ray.exceptions.RuntimeEnvSetupError as exc:  # the folder could not be shipped
        raise UsageError(_not_shipped(working_dir, exc)) from None
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "this machine"
        raise UsageError(f"cannot join the Ray cluster at {where}: "
                         f"{str(exc).strip().splitlines()[0]}") from None
    return len(live_nodes())


def _not_shipped(folder: Path | None, exc: Exception) -> str:
    """One line for a study folder Ray would not ship: too big, say (Ray's own limit)."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    reason = lines[-1].split(" to the Ray cluster: ", 1)[-1] if lines else type(exc).__name__
    line = f"cannot ship the study file's folder {folder} to the Ray cluster's workers: "
    if "exceeds the maximum size" in reason:
        return (line + reason.split(". To exclude")[0] + "; leave data and other large "
                "files out with a .rayignore (or .gitignore) beside the study file, and read "
                "data from a path every node sees (--data-dir)")
    return line + reason


def _check_reachable(address: str) -> None:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"Ray address '{address}' is not HOST:PORT (or ray://HOST:PORT, auto, "
                         "local); give the head node's address, e.g. 10.0.0.5:6379")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_S).close()
    except OSError as exc:
        raise UsageError(f"no Ray cluster answers at {address} ({exc.strerror or exc}); start "
                         "one with `ray start --head`, or give its address with --ray-address "
                         f"or ${ADDRESS_ENV}") from None


def live_nodes() -> list[dict[str, Any]]:
    import ray

    return [node for node in ray.nodes() if node.get("Alive")]


def check_resources(wanted: Resources, wait_s: float = 0.0, workers: int = 1,
                    log: Callable[[str], None] | None = None) -> None:
    """UsageError (exit 2, before any trial) if no live node has what one worker asks for:
    Ray would otherwise wait for such a node for ever. With `wait_s`, for an autoscaling
    cluster, first ask the autoscaler for `workers` such bundles (Ray's public
    `request_resources`) and wait that long for a node that fits."""
    fits, listed, count = _fitting(wanted)
    if fits or wait_s <= 0:
        if not fits:
            raise UsageError(_no_node(wanted, count, listed))
        return
    from ray.autoscaler.sdk import request_resources

    bundle = {"CPU": wanted.cpus, **({"GPU": wanted.gpus} if wanted.gpus else {})}
    request_resources(bundles=[bundle] * workers)
    if log is not None:
        log(f"no node of the Ray cluster can run a worker asking for {wanted} yet: asked its "
            f"autoscaler for {workers}, waiting up to {wait_s:g} s (--ray-wait)")
    started = time.monotonic()
    try:
        while not fits:
            if time.monotonic() - started > wait_s:
                raise UsageError(_no_node(wanted, count, listed, waited_s=wait_s))
            time.sleep(NODE_POLL_S)
            fits, listed, count = _fitting(wanted)
    finally:  # the tasks' own demand drives the autoscaler from here on
        request_resources(bundles=[])
    if log is not None:
        log(f"a node that can run a worker joined after {time.monotonic() - started:.0f} s")


def _fitting(wanted: Resources) -> tuple[bool, str, int]:
    """Whether a live node can run a worker; the live nodes' CPUs and GPUs; their count."""
    nodes = live_nodes()
    have = [(node["Resources"].get("CPU", 0.0), node["Resources"].get("GPU", 0.0))
            for node in nodes]
    listed = "; ".join(f"{cpus:g} CPU, {gpus:g} GPU" for cpus, gpus in have)
    return (any(cpus >= wanted.cpus and gpus >= wanted.gpus for cpus, gpus in have), listed,
            len(nodes))


def _no_node(wanted: Resources, count: int, listed: str, waited_s: float = 0.0) -> str:
    waited = f" after waiting {waited_s:g} s for the autoscaler" if waited_s else ""
    hint = "" if waited_s else "; on an autoscaling cluster, wait for one with --ray-wait"
    return (f"no node of the Ray cluster can run a worker asking for {wanted}{waited}: its "
            f"{count} node(s) have {listed}; lower cpus_per_trial or gpus_per_trial "
            f"(--cpus-per-trial, --gpus-per-trial) or add a node{hint}")


def worker(argv: list[str]) -> int:
    """One worker's whole life, inside a Ray task: autotune's own worker loop."""
    import ray

    os.environ[NODE_ENV] = ray.get_runtime_context().get_node_id()
    from autotune.cli._run import main

    return main(argv)


def run_round(argvs: Sequence[list[str]], wanted: Resources,
              tick: Callable[[], None] | None = None, tick_s: float = 5.0) -> list[int]:
    """Run one Ray task per worker command line until all end; their exit codes, KILLED for
    one Ray lost. Ctrl-C/SIGTERM cancel the tasks (each closes its trial, as a local worker
    does on Ctrl-C) and raise KeyboardInterrupt once they ended."""
    import ray

    task = ray.remote(worker)
    refs = [task.options(num_cpus=wanted.cpus, num_gpus=wanted.gpus, name=f"autotune-w{i}",
                         max_retries=0)  # a lost worker's trial is retried by autotune instead
            .remote(argv) for i, argv in enumerate(argvs)]
    codes: dict[Any, int] = {}
    pending = list(refs)
    next_tick = time.monotonic()
    try:
        while pending:
            if tick is not None and time.monotonic() >= next_tick:
                tick()
                next_tick = time.monotonic() + tick_s
            ready, pending = ray.wait(pending, timeout=min(tick_s, 1.0))
            for ref in ready:
                codes[ref] = _exit_code(ref)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref)
        ray.wait(pending, num_returns=len(pending), timeout=CANCEL_WAIT_S)
        raise
    return [codes[ref] for ref in refs]


def _exit_code(ref: Any) -> int:
    import ray

    try:
        return int(ray.get(ref))
    except ray.exceptions.TaskCancelledError:
        return 130
    except ray.exceptions.RayTaskError as exc:  # autotune's own code raised: a bug, shown
        print(str(exc), file=sys.stderr, flush=True)
        return 1
    except ray.exceptions.RayError as exc:  # the worker's process or node died
        print(f"a Ray worker was lost: {str(exc).strip().splitlines()[0]}", file=sys.stderr,
              flush=True)
        return KILLED


def shutdown() -> None:
    """Leave the cluster (a cluster Ray started for this run alone stops with it)."""
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
