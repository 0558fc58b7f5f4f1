"""A 3 x 3 convolution of one-channel images as a matrix product: `conv3x3_gray(x, conv)`.

oneDNN, which runs PyTorch's CPU convolutions, is slow when the input has a single channel
(each output pixel is 9 multiply-adds, too few for its kernels): for the mnist study's first
layer (128 images of 28 x 28 -> 16 channels) ~0.8 ms forward, ~30 GFLOP/s. Written as a
matrix product it is two cheap steps: the 9 shifted copies of the padded images, one row
each of a (9, N*H*W) matrix (contiguous copies), then (N*H*W, 9) @ (9, C_out), whose
(N*H*W, C_out) result is already the channels-last output: ~0.45 ms. The weight's gradient
stays oneDNN's (its own backward is fast here: ~0.2 ms). The images need no gradient.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_aten = torch.ops.aten


def fits(conv: nn.Module) -> bool:
    """Whether `conv` is a 3 x 3, stride-1, 'same'-padded convolution of one channel."""
    return (type(conv) is nn.Conv2d and conv.in_channels == 1 and conv.groups == 1
            and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (1, 1) and conv.dilation == (1, 1)
            and conv.padding_mode == "zeros")


def conv3x3_gray(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """conv(x) for (N, 1, H, W) inputs that need no gradient, as a channels-last
    (N, C_out, H, W) tensor; gradients reach the weight and bias."""
    if x.requires_grad:  # not a first layer: keep the convolution's own backward
        return conv(x)
    return _Conv3x3Gray.apply(x, conv.weight, conv.bias)


def _columns(x: Tensor) -> Tensor:
    """(9, N*H*W): row 3*dy + dx holds every pixel's neighbour at offset (dy - 1, dx - 1)."""
    n, _, h, w = x.shape
    padded = F.pad(x.reshape(n, h, w), (1, 1, 1, 1))
    columns = x.new_empty(9, n, h, w)
    for k in range(9):
        dy, dx = divmod(k, 3)
        columns[k].copy_(padded[:, dy : dy + h, dx : dx + w])
    return columns.view(9, n * h * w)


class _Conv3x3Gray(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        n, _, h, w = x.shape
        c_out = weight.shape[0]
        flat_weight = weight.reshape(c_out, 9)
        rows = _columns(x).t()  # (N*H*W, 9), a view
        if bias is not None:
            out = torch.addmm(bias, rows, flat_weight.t())
        else:
            out = torch.mm(rows, flat_weight.t())
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        # (N*H*W, C_out) is (N, H, W, C_out) in memory: channels-last (N, C_out, H, W)
        return out.view(n, h, w, c_out).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        _, need_weight, need_bias = ctx.needs_input_grad
        grad_weight = grad_bias = None
        if need_weight:
            grad_weight = _aten.convolution_backward(
                grad_out, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                [False, True, False])[1]
        if ctx.has_bias and need_bias:
            grad_bias = grad_out.permute(0, 2, 3, 1).reshape(-1, weight.shape[0]).sum(0)
        return None, grad_weight, grad_bias
