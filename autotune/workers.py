"""K local worker processes sharing one study; device and CPU-thread placement."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType


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
    return [proc.returncode for proc in procs]


def _wait_any(procs: Sequence[subprocess.Popen[bytes]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        time.sleep(0.2)


def worker_command(base_argv: Sequence[str], placement: Placement
                   ) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of one worker: the user's flags plus its placement."""
    env = dict(os.environ)
    device = "cpu"
    if placement.device.startswith("cuda"):
        # the worker sees only its GPU, as cuda:0 (indices count the GPUs visible to us)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        index = int(placement.device.split(":")[1])
        env["CUDA_VISIBLE_DEVICES"] = visible.split(",")[index] if visible else str(index)
        device = "cuda"
    cmd = [sys.executable, "-m", "autotune.run", *base_argv, "--workers", "1",
           "--worker-index", str(placement.index), "--threads", str(placement.threads),
           "--device", device]
    return cmd, env


def n_cores() -> int:
    """CPU cores this process may use (respects taskset/cgroup affinity)."""
    return len(os.sched_getaffinity(0))
