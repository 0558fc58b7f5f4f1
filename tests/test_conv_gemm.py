from __future__ import annotations

import pytest
import torch
from torch import nn

from autotune.fast._conv_gemm import conv3x3_gray, fits


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("size", [(28, 28), (5, 9)])
def test_the_product_gives_the_convolutions_output_and_parameter_gradients(
    bias: bool, size: tuple[int, int]
) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 6, kernel_size=3, padding=1, bias=bias)
    theirs = nn.Conv2d(1, 6, kernel_size=3, padding=1, bias=bias)
    theirs.load_state_dict(conv.state_dict())
    x = torch.randn(7, 1, *size)
    out, expected = conv3x3_gray(x, conv), theirs(x)
    torch.testing.assert_close(out, expected)
    assert out.is_contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(expected)
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(conv.weight.grad, theirs.weight.grad, rtol=1e-4, atol=1e-4)
    if bias:
        torch.testing.assert_close(conv.bias.grad, theirs.bias.grad, rtol=1e-4, atol=1e-4)


def test_an_input_that_needs_its_gradient_gets_the_convolution_itself() -> None:
    conv = nn.Conv2d(1, 4, kernel_size=3, padding=1)
    x = torch.randn(2, 1, 6, 6, requires_grad=True)
    conv3x3_gray(x, conv).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_fits_takes_only_3x3_same_convolutions_of_one_channel() -> None:
    assert fits(nn.Conv2d(1, 8, 3, padding=1))
    assert not fits(nn.Conv2d(3, 8, 3, padding=1))
    assert not fits(nn.Conv2d(1, 8, 5, padding=2))
    assert not fits(nn.Conv2d(1, 8, 3, padding=1, stride=2))
    assert not fits(nn.Conv2d(1, 8, 3, padding=1, padding_mode="reflect"))
    assert not fits(nn.Conv2d(1, 8, 3, padding=0))
