"""K local worker processes sharing one study; device and CPU-thread placement."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import NoReturn, Protocol

from autotune import _env as env


@dataclass(frozen=True)
class Placement:
    """Where one worker trains and with how many CPU threads."""

    index: int
    device: str  # "cpu", "cuda:0", ...
    threads: int  # torch intra-op threads


def plan(n_workers: int, device: str, n_gpus: int, n_cores: int) -> list[Placement]:
    """Spread workers over GPUs round-robin (several per GPU allowed) and split CPU cores.

    CPU threads are divided so K workers never oversubscribe the cores: on 2 cores, busy
    torch threads of two processes competing for one core run 10-20x slower (measured).
    """
    if n_workers < 1:
        raise ValueError(f"n_workers must be >= 1, got {n_workers=}")
    use_gpu = device == "cuda" or (device == "auto" and n_gpus > 0)
    threads = max(1, n_cores // n_workers)
    return [Placement(i, f"cuda:{i % n_gpus}" if use_gpu and n_gpus else "cpu", threads)
            for i in range(n_workers)]


def spawn(commands: Sequence[tuple[list[str], dict[str, str]]],
          tick: Callable[[], None] | None = None, tick_s: float = 5.0) -> list[int]:
    """Run worker commands in parallel until all exit; return their exit codes.

    Ctrl-C/SIGTERM are forwarded to the workers (each closes its trial and exits 130), and
    KeyboardInterrupt is raised once they have. `tick` runs every `tick_s` seconds meanwhile
    (the parent's watchdog). A worker killed by a signal has a negative exit code.
    """
    # own sessions: a terminal's Ctrl-C reaches the parent only, which closes workers in order
    procs = [subprocess.Popen(cmd, env=env, start_new_session=True) for cmd, env in commands]
    return _wait_all(procs, tick, tick_s)


FORK_ENV = "AUTOTUNE_FORK_WORKERS"  # 1 (default): fork where `can_fork` allows; 0: spawn


def fork_allowed() -> bool:
    """$AUTOTUNE_FORK_WORKERS: 1 (the default) or 0; UsageError for anything else."""
    return bool(env.number(FORK_ENV, 1, int, lambda v: v in (0, 1), "0 or 1"))


def can_fork(placements: Sequence[Placement]) -> bool:
    """Whether `fork` may start these workers: CPU workers of one torch thread each, on a
    system with fork, unless $AUTOTUNE_FORK_WORKERS=0. A forked child must not run a parallel
    region of GNU OpenMP (PyTorch's CPU threads) with more than one thread once the parent
    has run one: it waits for pool threads that exist only in the parent (measured: a
    2-thread matrix product hangs, a 1-thread one runs). GPU workers are spawned anyway:
    CUDA does not survive a fork."""
    # numba (the CNN blocks' loops) starts its OpenMP pool at its first parallel loop; one
    # started in this process could not be used in a fork, so then workers are new processes
    return (fork_allowed() and hasattr(os, "fork") and "numba" not in sys.modules
            and bool(placements) and all(p.device == "cpu" and p.threads == 1
                                         for p in placements))


def fork(targets: Sequence[Callable[[], int]], tick: Callable[[], None] | None = None,
         tick_s: float = 5.0) -> list[int]:
    """`spawn` for workers that are forks of this process: each runs its target (which
    returns the worker's exit code) in a child that inherits what the parent loaded (torch,
    the data), so it starts in ~0.1 s instead of a fresh interpreter's seconds. Signals,
    ticks and exit codes as `spawn`. Only where `can_fork` says so."""
    sys.stdout.flush()  # or the children would write what is buffered again
    sys.stderr.flush()
    procs: list[Forked] = []
    for target in targets:
        pid = os.fork()
        if pid == 0:
            _run_child(target)
        procs.append(Forked(pid))
    return _wait_all(procs, tick, tick_s)


class Forked:
    """A forked child, waited for as `spawn` waits for a subprocess.Popen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None  # negative: killed by that signal

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)


def _run_child(target: Callable[[], int]) -> NoReturn:
    """The child's whole life: its own session (as `spawn`'s), the target, then exit without
    unwinding into the parent's frames or running its exit handlers."""
    code = 1
    try:
        os.setsid()
        # one thread for numba's OpenMP pool too, which it starts with this many threads
        # whatever its set_num_threads says (2 threads in a fork: waits forever)
        os.environ["NUMBA_NUM_THREADS"] = "1"
        code = target()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # a bug: show it, as a spawned worker would
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


class _Process(Protocol):
    returncode: int | None

    def poll(self) -> int | None: ...

    def send_signal(self, signum: int) -> None: ...


def _wait_all(procs: Sequence[_Process], tick: Callable[[], None] | None, tick_s: float
              ) -> list[int]:
    """Wait until every worker has exited, forwarding Ctrl-C/SIGTERM and ticking."""
    interrupted: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        interrupted.append(signum)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while any(proc.poll() is None for proc in procs):
            if tick is not None:
                tick()
            _wait_any(procs, tick_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if interrupted:
        raise KeyboardInterrupt(f"signal {interrupted[0]}")
    return [proc.returncode for proc in procs if proc.returncode is not None]


def _wait_any(procs: Sequence[_Process], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        time.sleep(0.05)  # the last worker's exit is noticed within 50 ms


def worker_command(base_argv: Sequence[str], placement: Placement
                   ) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of one worker: the user's flags plus its placement."""
    environ = dict(os.environ)
    if placement.device.startswith("cuda"):
        # the worker sees only its GPU, as cuda:0 (indices count the GPUs visible to us)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        index = int(placement.device.split(":")[1])
        environ["CUDA_VISIBLE_DEVICES"] = visible.split(",")[index] if visible else str(index)
    return [sys.executable, "-m", "autotune.run", *worker_args(base_argv, placement)], environ


def worker_args(base_argv: Sequence[str], placement: Placement) -> list[str]:
    """`autotune.run`'s arguments for one worker (a forked one is given them as they are)."""
    device = "cuda" if placement.device.startswith("cuda") else "cpu"
    return [*base_argv, "--workers", "1", "--worker-index", str(placement.index),
            "--threads", str(placement.threads), "--device", device]


def n_cores() -> int:
    """CPU cores this process may use (respects taskset/cgroup affinity)."""
    return len(os.sched_getaffinity(0))
