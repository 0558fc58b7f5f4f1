"""A CNN's first block on one-channel images in one step: `gray_block(x, conv, bn)`.

Conv2d(1 -> C, 3 x 3, padding 1) -> BatchNorm2d -> MaxPool2d(2) -> ReLU, on the compiled
loops of `autotune.fast._cnn_kernels`: the convolution's output (6.4 MB for the mnist study's
first block at batch 128) is never stored; the statistics pass and the pooling pass each
recompute it, 9 multiply-adds per value, from the 28 x 28 images, which stay in cache, and
the backward forms BatchNorm's input gradient one pooling window at a time and multiplies
it at once into the convolution's weight gradient, so no full-size gradient is stored
either. The images need no gradient (they are the network's input).

Outputs and gradients are the four layers' up to float rounding (tests/test_gray_block.py).
Without numba, or for an input that needs its gradient, the layers run as
`autotune.fast._conv_gemm` and `autotune.fast._bn_pool_relu` run them.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autotune.fast import _conv_gemm as conv_gemm
from autotune.fast._bn_pool_relu import (
    Affine,
    batch_affine,
    block_kernels,
    bn_pool_relu,
    pooled_backward,
    pooling_pass,
)


def gray_block(x: Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> Tensor:
    """relu(max_pool2d(bn(conv(x)), 2)) for (N, 1, H, W) float32 CPU images, in `bn`'s
    mode (see `autotune.fast._bn_pool_relu.bn_pool_relu`); a channels-last result."""
    kernels = block_kernels()
    if kernels is None or x.requires_grad:
        return bn_pool_relu(conv_gemm.conv3x3_gray(x, conv), bn)
    running_mean, running_var = cast(Tensor, bn.running_mean), cast(Tensor, bn.running_var)
    if not bn.training:
        with torch.no_grad():
            scale = bn.weight * (running_var + bn.eps).rsqrt()
            shift = bn.bias - scale * running_mean
            padded, weight, bias = _conv_arrays(x, conv.weight, conv.bias)
            return _pool(kernels, x, padded, weight, bias, scale, shift)[0]
    cast(Tensor, bn.num_batches_tracked).add_(1)
    return _Training.apply(x, conv.weight, conv.bias, bn.weight, bn.bias, running_mean,
                           running_var, bn.momentum, bn.eps)


def _conv_arrays(x: Tensor, weight: Tensor, bias: Tensor | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The zero-padded images (N, H + 2, W + 2), the weight as (9, C) (tap-major, as the
    loops read it) and the bias (C,)."""
    n, _, h, w = x.shape
    padded = F.pad(x.detach().reshape(n, h, w), (1, 1, 1, 1)).numpy()
    flat_weight = weight.detach().reshape(weight.shape[0], 9).t().contiguous().numpy()
    flat_bias = (bias.detach() if bias is not None else torch.zeros(weight.shape[0])).numpy()
    return padded, flat_weight, flat_bias


def _pool(kernels: ModuleType, x: Tensor, padded: np.ndarray, weight: np.ndarray,
          bias: np.ndarray, scale: Tensor, shift: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    n, _, h, w = x.shape
    return pooling_pass(kernels, kernels.conv_pool_affine_relu, (padded, weight, bias),
                        (n, weight.shape[1], h, w), scale, shift)


class _Training(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, conv_weight: Tensor, conv_bias: Tensor | None,
                weight: Tensor, bias: Tensor, running_mean: Tensor, running_var: Tensor,
                momentum: float, eps: float) -> Tensor:
        kernels = cast(ModuleType, block_kernels())
        n, _, h, w = x.shape
        padded, flat_weight, flat_bias = _conv_arrays(x, conv_weight, conv_bias)
        n_chunks = kernels.parallel_chunks(torch.get_num_threads())
        sums, squares = kernels.conv_channel_sums(padded, flat_weight, flat_bias, n_chunks)
        affine = batch_affine(sums, squares, n * h * w, weight, bias, running_mean,
                              running_var, momentum, eps)
        out, pooled, choice = _pool(kernels, x, padded, flat_weight, flat_bias, affine.scale,
                                    affine.shift)
        ctx.save_for_backward(out, pooled, choice)
        ctx.arrays = (padded, flat_weight, flat_bias)
        ctx.affine = affine
        ctx.conv_shape = conv_weight.shape
        ctx.has_conv_bias = conv_bias is not None
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        kernels = cast(ModuleType, block_kernels())
        out, pooled, choice = ctx.saved_tensors
        padded, flat_weight, flat_bias = ctx.arrays
        affine: Affine = ctx.affine
        n, h, w = padded.shape[0], padded.shape[1] - 2, padded.shape[2] - 2
        grads = pooled_backward(kernels, grad_out, out, pooled, affine, n * h * w)
        conv_grad64, conv_bias_grad64 = kernels.conv_weight_grad(
            padded, flat_weight, flat_bias, grads.grad_rows, grads.out_rows, choice.numpy(),
            affine.scale.numpy(), grads.x_coef, grads.shift, grads.n_chunks)
        conv_grad = torch.from_numpy(conv_grad64).float().t().reshape(ctx.conv_shape)
        conv_bias_grad = (torch.from_numpy(conv_bias_grad64).float() if ctx.has_conv_bias
                          else None)
        return (None, conv_grad, conv_bias_grad, grads.weight, grads.bias, None, None, None,
                None)
