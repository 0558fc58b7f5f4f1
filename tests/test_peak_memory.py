"""Per-trial peak memory: measured from reset(), so a big earlier trial does not show later."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from autotune.training import _peak_memory as peak_memory

CPU = torch.device("cpu")


# In a fresh process: this test process's own history (hundreds of earlier tests, malloc's
# kept memory) made the result depend on the test order once; a trial's worker is fresh too.
CPU_CHECK = """
import json, torch
from autotune.training import _peak_memory as peak_memory
cpu = torch.device("cpu")
peak_memory.reset(cpu)
before = peak_memory.peak_mb(cpu)
big = torch.ones(128 * 2**20, dtype=torch.float32)  # 512 MiB, touched
assert big.sum().item() > 0
during = peak_memory.peak_mb(cpu)
del big
peak_memory.reset(cpu)
print(json.dumps([before, during, peak_memory.peak_mb(cpu)]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
def test_peak_memory_on_cpu_sees_a_big_allocation_and_forgets_it_after_reset() -> None:
    result = subprocess.run([sys.executable, "-c", CPU_CHECK], capture_output=True, text=True,
                            timeout=120, check=True)
    before, during, after = json.loads(result.stdout)
    assert before > 0
    assert during >= before + 400 and after < during - 400


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_peak_memory_on_cuda_counts_torch_allocations_since_reset() -> None:
    device = torch.device("cuda")
    big = torch.ones(64 * 2**20, device=device)  # 256 MiB
    del big
    peak_memory.reset(device)
    assert (peak_memory.peak_mb(device) or 0.0) < 200
    again = torch.ones(64 * 2**20, device=device)
    assert (peak_memory.peak_mb(device) or 0.0) >= 256
    del again
