"""Per-trial peak memory: measured from reset(), so a big earlier trial does not show later."""

from __future__ import annotations

import sys

import pytest
import torch

from autotune import peak_memory

CPU = torch.device("cpu")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
def test_peak_memory_on_cpu_sees_a_big_allocation_and_forgets_it_after_reset() -> None:
    peak_memory.reset(CPU)
    before = peak_memory.peak_mb(CPU)
    assert before is not None and before > 0
    big = torch.ones(64 * 2**20, dtype=torch.float32)  # 256 MiB, touched
    assert big.sum().item() > 0
    during = peak_memory.peak_mb(CPU)
    del big
    peak_memory.reset(CPU)
    after = peak_memory.peak_mb(CPU)
    assert during is not None and after is not None
    assert during >= before + 200 and after < during - 200


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
