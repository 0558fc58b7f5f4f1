"""Peak memory of one trial: GPU memory allocated by torch on CUDA, the process's resident set
on CPU (Linux), reset at the start of each trial so trials in one process do not inherit it."""

from __future__ import annotations

import os

import torch

STATUS = "/proc/self/status"
CLEAR_REFS = "/proc/self/clear_refs"  # writing "5" resets VmHWM (Linux >= 4.0)
MIB = 2**20


def reset(device: torch.device) -> None:
    """Start measuring from now; a no-op where the platform cannot reset its peak."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # os-level calls: a third of the time of Path.write_text, twice a trial
        fd = os.open(CLEAR_REFS, os.O_WRONLY)
        try:
            os.write(fd, b"5")
        finally:
            os.close(fd)
    except OSError:  # not Linux, or /proc read-only: the peak then covers the whole process
        pass


def peak_mb(device: torch.device) -> float | None:
    """MiB at the peak since reset(): torch's allocations on CUDA, resident set size on CPU;
    None where neither can be read."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / MIB, 1)
    try:
        fd = os.open(STATUS, os.O_RDONLY)
        try:
            status = os.read(fd, 1 << 16)
        finally:
            os.close(fd)
    except OSError:
        return None
    start = status.find(b"\nVmHWM:")
    if start < 0:
        return None
    kib = status[start + 7 : status.find(b"kB", start)].strip()
    return round(int(kib) * 1024 / MIB, 1) if kib.isdigit() else None
