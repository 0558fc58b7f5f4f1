"""Peak memory of one trial: GPU memory allocated by torch on CUDA, the process's resident set
on CPU (Linux), reset at the start of each trial so trials in one process do not inherit it."""

from __future__ import annotations

import re
from pathlib import Path

import torch

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")  # writing "5" resets VmHWM (Linux >= 4.0)
MIB = 2**20


def reset(device: torch.device) -> None:
    """Start measuring from now; a no-op where the platform cannot reset its peak."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        CLEAR_REFS.write_text("5")
    except OSError:  # not Linux, or /proc read-only: the peak then covers the whole process
        pass


def peak_mb(device: torch.device) -> float | None:
    """MiB at the peak since reset(): torch's allocations on CUDA, resident set size on CPU;
    None where neither can be read."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / MIB, 1)
    try:
        found = re.search(r"^VmHWM:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return round(int(found.group(1)) * 1024 / MIB, 1) if found else None
