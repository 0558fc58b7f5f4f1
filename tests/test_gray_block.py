from __future__ import annotations

import pytest
import torch
from torch import nn

from autotune.fast._bn_pool_relu import block_kernels
from autotune.fast._gray_block import gray_block

pytestmark = pytest.mark.skipif(block_kernels() is None, reason="numba is not installed")


def layers(channels: int, bias: bool, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    conv = nn.Conv2d(1, channels, kernel_size=3, padding=1, bias=bias)
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():  # trained-looking BatchNorm parameters, one scale negative
        bn.weight.uniform_(0.5, 1.5)
        bn.weight[1] = -0.7
        bn.bias.uniform_(-0.3, 0.3)
    return nn.Sequential(conv, bn, nn.MaxPool2d(2), nn.ReLU())


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("size", [(28, 28), (9, 7)])  # odd sizes: the pool drops the edge
@pytest.mark.parametrize("channels", [8, 19])  # 19: vector instructions and a scalar tail
def test_training_gives_the_four_layers_outputs_gradients_and_statistics(
    bias: bool, size: tuple[int, int], channels: int
) -> None:
    x = torch.randn(12, 1, *size, generator=torch.Generator().manual_seed(0))
    x[:, :, :3] = 0.0  # a flat background: ties inside the pool's windows
    results = []
    for fused in (False, True):
        net = layers(channels, bias, seed=1)
        for step in range(2):
            out = gray_block(x + step, net[0], net[1]) if fused else net(x + step)
            out.backward(torch.cos(torch.arange(out.numel()).view_as(out) * 0.37))
        results.append((out.detach(), net))
    (out, net), (fused_out, fused_net) = results
    torch.testing.assert_close(fused_out, out, rtol=1e-5, atol=1e-5)
    assert fused_out.is_contiguous(memory_format=torch.channels_last)
    for (name, got), expected in zip(fused_net.named_parameters(), net.parameters(),
                                     strict=True):
        torch.testing.assert_close(got.grad, expected.grad, rtol=1e-4, atol=1e-3, msg=name)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(fused_net[1], name), getattr(net[1], name))


def test_eval_mode_gives_the_four_layers_output() -> None:
    x = torch.randn(5, 1, 12, 12, generator=torch.Generator().manual_seed(3))
    net = layers(4, bias=True, seed=2)
    net(x * 2 + 1)  # running statistics away from their start
    net.eval()
    with torch.no_grad():
        expected = net(x)
        got = gray_block(x, net[0], net[1])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_an_input_that_needs_its_gradient_gets_the_layers_backward() -> None:
    net = layers(4, bias=False, seed=4)
    x = torch.randn(3, 1, 8, 8, requires_grad=True)
    gray_block(x, net[0], net[1]).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
