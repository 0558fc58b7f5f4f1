from __future__ import annotations

import pytest
import torch

from autotune.training import _rng as rng


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_seed_draws_what_torch_manual_seed_draws(device: str) -> None:
    torch.manual_seed(11)
    expected = (torch.rand(4), torch.rand(4, device=device), torch.randn(3, device=device))
    torch.manual_seed(0)  # something else in between
    rng.seed(11, torch.device(device))
    got = (torch.rand(4), torch.rand(4, device=device), torch.randn(3, device=device))
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)
