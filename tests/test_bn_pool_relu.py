from __future__ import annotations

import pytest
import torch
from torch import nn

from autotune.fast import _bn_pool_relu as bn_pool_relu_module
from autotune.fast._bn_pool_relu import bn_pool_relu, fusable


def block(channels: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():  # trained-looking affine parameters, one of them negative
        bn.weight.uniform_(0.5, 1.5)
        bn.weight[1] = -0.7
        bn.bias.uniform_(-0.3, 0.3)
    return nn.Sequential(bn, nn.MaxPool2d(2), nn.ReLU())


def run_both(x: torch.Tensor, seed: int, train: bool, n_steps: int = 2):  # type: ignore[no-untyped-def]
    """The modules and bn_pool_relu on copies of one block: outputs, grads, running stats."""
    results = []
    for fused in (False, True):
        net = block(x.shape[1], seed).train(train)
        for step in range(n_steps):
            inputs = (x + step).clone().requires_grad_(train)
            out = bn_pool_relu(inputs, net[0]) if fused else net(inputs)
            if train:
                out.backward(torch.cos(torch.arange(out.numel()).view_as(out) * 0.37))
        results.append((out.detach(), inputs.grad, net[0]))
    return results


@pytest.fixture(params=["compiled loops", "pytorch ops"])
def implementation(request, monkeypatch):  # type: ignore[no-untyped-def]
    """Each test runs on both: numba's loops (channels-last inputs) and the PyTorch ops,
    which a machine without numba runs (block_kernels() gives None there)."""
    if request.param == "pytorch ops":
        monkeypatch.setattr(bn_pool_relu_module, "block_kernels", lambda: None)
    elif bn_pool_relu_module.block_kernels() is None:
        pytest.skip("numba is not installed")
    return request.param


@pytest.mark.parametrize("shape", [(16, 4, 8, 8), (8, 3, 7, 9)])  # odd sizes: the pool drops
@pytest.mark.parametrize("channels_last", [False, True])
def test_training_gives_the_modules_outputs_gradients_and_running_statistics(
    shape: tuple[int, int, int, int], channels_last: bool, implementation: str
) -> None:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1)) * 2 + 0.5
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    (out, grad, bn), (fused_out, fused_grad, fused_bn) = run_both(x, seed=0, train=True)
    torch.testing.assert_close(fused_out, out, rtol=1e-5, atol=1e-5)
    assert fused_out.stride() == out.stride()
    torch.testing.assert_close(fused_grad, grad, rtol=1e-4, atol=1e-5)
    for name in ("weight", "bias"):
        torch.testing.assert_close(getattr(fused_bn, name).grad, getattr(bn, name).grad,
                                   rtol=1e-4, atol=1e-4)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(fused_bn, name), getattr(bn, name))
    assert int(fused_bn.num_batches_tracked) == 2


@pytest.mark.parametrize("channels", [16, 19, 40])  # whole vectors, and a scalar tail
def test_many_channels_and_tied_windows_give_the_modules_gradients(
    channels: int, implementation: str
) -> None:
    """Channel counts that the compiled loops run in vector instructions, on values rounded
    to halves so that most windows hold ties: the pool picks the first of them."""
    x = torch.round(torch.randn(6, channels, 10, 10,
                                generator=torch.Generator().manual_seed(4)) * 2) / 2
    x = x.contiguous(memory_format=torch.channels_last)
    (out, grad, bn), (fused_out, fused_grad, fused_bn) = run_both(x, seed=5, train=True)
    torch.testing.assert_close(fused_out, out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused_grad, grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fused_bn.weight.grad, bn.weight.grad, rtol=1e-4, atol=1e-4)


def test_eval_mode_uses_the_running_statistics_like_the_modules(implementation: str) -> None:
    x = torch.randn(6, 4, 10, 10, generator=torch.Generator().manual_seed(2)).contiguous(
        memory_format=torch.channels_last)
    net = block(4, seed=3)
    net(x * 3 + 1)  # running statistics away from their start
    net.eval()
    with torch.no_grad():
        expected = net(x)
    torch.testing.assert_close(bn_pool_relu(x, net[0]), expected, rtol=1e-5, atol=1e-5)
    assert int(net[0].num_batches_tracked) == 1  # evaluation counts no batch


def test_fusable_takes_exactly_batchnorm_then_a_2x2_max_pool_then_relu() -> None:
    bn, pool, relu = nn.BatchNorm2d(3), nn.MaxPool2d(2), nn.ReLU()
    assert fusable(bn, pool, relu)
    assert not fusable(bn, nn.MaxPool2d(3), relu)
    assert not fusable(bn, nn.MaxPool2d(2, stride=1), relu)
    assert not fusable(bn, nn.MaxPool2d(2, ceil_mode=True), relu)
    assert not fusable(bn, pool, nn.LeakyReLU())
    assert not fusable(nn.BatchNorm2d(3, momentum=None), pool, relu)  # cumulative average
    assert not fusable(nn.BatchNorm2d(3, affine=False), pool, relu)
    assert not fusable(pool, bn, relu)
