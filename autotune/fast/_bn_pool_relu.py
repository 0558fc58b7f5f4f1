"""BatchNorm2d -> MaxPool2d(2) -> ReLU in one step on the CPU: `bn_pool_relu(x, bn)`.

`build_cnn` stacks Conv -> BatchNorm -> MaxPool(2) -> ReLU. Run as three modules, each pass
touches the full-size feature map (128 x 16 x 28 x 28 floats = 6.4 MB for the mnist
study's first block): BatchNorm reads it twice and writes it normalised, the pool reads it
again, and the backward passes write and read three full-size gradients.

But BatchNorm is, per channel, y = a * x + b with a = gamma / sqrt(var + eps) and
b = beta - a * mean, and for a > 0 that map keeps the order of values: the max of y over a
2 x 2 window is a times the max of x, plus b, at the same position (for a < 0, the min: the
max of -x). So the statistics are taken from x, the pool runs on x, and the affine map and
ReLU run on the pooled map, a quarter of the size. In the backward, BatchNorm's gradient
dx = a * (dy - mean(dy) - x_hat * mean(dy * x_hat)) needs dy only through its sums, and dy is
zero outside the pooled positions, so both sums come from the pooled map; what remains at
full size is one scatter (the pool's backward) and one affine pass over x.

Two implementations: compiled loops (`autotune.fast._cnn_kernels`, numba), which make each
direction two passes and keep the pool's choice as one byte per value, for channels-last
float32 CPU inputs; and PyTorch ops, for the rest and where numba is missing. Outputs,
gradients and running statistics are BatchNorm's up to float rounding
(tests/test_bn_pool_relu.py, both implementations); ties inside a pooling window, which the
pool breaks by position, are broken the same way unless rounding in BatchNorm's output
makes two different inputs equal. Measured on this project's 2-core CPU, the mnist study's
first block (N=128, 16 channels, 28 x 28), forward and backward, separate modules / PyTorch
ops / compiled loops: 2.75 / 2.45 / 1.31 ms (scratch A/B, alternated in one process).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple, cast

import numpy as np
import torch
from torch import Tensor, nn

_aten = torch.ops.aten


def fusable(bn: nn.Module, pool: nn.Module, relu: nn.Module) -> bool:
    """Whether these three layers, in this order, are what `bn_pool_relu` computes."""
    return (type(bn) is nn.BatchNorm2d and bn.affine and bn.track_running_stats
            and bn.momentum is not None
            and type(pool) is nn.MaxPool2d and _pairs(pool.kernel_size) == (2, 2)
            and _pairs(pool.stride) == (2, 2) and _pairs(pool.padding) == (0, 0)
            and _pairs(pool.dilation) == (1, 1) and not pool.ceil_mode
            and not pool.return_indices and type(relu) is nn.ReLU)


def _pairs(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def bn_pool_relu(x: Tensor, bn: nn.BatchNorm2d) -> Tensor:
    """relu(max_pool2d(bn(x), 2)) for (N, C, H, W) x, in `bn`'s mode: in training, batch
    statistics and an update of the running ones (as `bn` itself does), with gradients.

    Channels-last float32 CPU inputs (a conv net's, in `autotune.fast._cpu_forward`) take the
    compiled loops of `autotune.fast._cnn_kernels` where numba is installed; anything else the
    PyTorch ops below. The output has the input's memory format either way.
    """
    running_mean, running_var = cast(Tensor, bn.running_mean), cast(Tensor, bn.running_var)
    kernels = block_kernels() if (
        x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
        and x.is_contiguous(memory_format=torch.channels_last)) else None
    if not bn.training:
        with torch.no_grad():  # running statistics: a fixed affine map
            scale = bn.weight * (running_var + bn.eps).rsqrt()
            shift = bn.bias - scale * running_mean
            if kernels is not None:
                return _kernel_pool_affine_relu(kernels, x, scale, shift)[0]
            return _pool_affine_relu(x, scale, shift)[0]
    cast(Tensor, bn.num_batches_tracked).add_(1)
    block = _Training if kernels is None else _KernelTraining
    return block.apply(x, bn.weight, bn.bias, running_mean, running_var, bn.momentum, bn.eps)


@functools.cache
def block_kernels() -> ModuleType | None:
    """`autotune.fast._cnn_kernels` with its loops compiled (loaded from numba's cache, ~0.3 s,
    once per process), or None where numba is missing or cannot compile them: then the
    blocks run on PyTorch ops, with a line on stderr saying why."""
    try:
        from autotune.fast import _cnn_kernels as cnn_kernels

        n_threads = torch.get_num_threads()
        cnn_kernels.compile_all(n_threads)  # never more threads than torch's
        # starting numba's OpenMP pool sets OpenMP's thread count to the pool's size, which is
        # what torch reads as its own: put torch's back
        torch.set_num_threads(n_threads)
    except Exception as exc:  # ImportError, or numba's own errors: keep training without
        print(f"autotune: CNN blocks on PyTorch ops (compiled loops unavailable: "
              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
              file=sys.stderr)
        return None
    return cnn_kernels


def channels_last(x: Tensor) -> Tensor:
    """x (N, C, H, W) laid out channels-last, as the compiled loops read it."""
    return x.contiguous(memory_format=torch.channels_last)


def as_rows(x: Tensor) -> np.ndarray:
    """The (N, H, W, C) NumPy view of a channels-last (N, C, H, W) tensor (no copy)."""
    return x.detach().permute(0, 2, 3, 1).numpy()


class Affine(NamedTuple):
    """BatchNorm as a per-channel affine map, from batch or running statistics."""

    scale: Tensor  # gamma / sqrt(var + eps), (C,) float32
    shift: Tensor  # beta - scale * mean
    mean: np.ndarray  # float64, for the backward
    rstd: np.ndarray  # 1 / sqrt(var + eps), float64


def batch_affine(sums: np.ndarray, squares: np.ndarray, count: int, weight: Tensor,
                 bias: Tensor, running_mean: Tensor, running_var: Tensor, momentum: float,
                 eps: float) -> Affine:
    """The training-mode map from per-channel sums over `count` values, updating the
    running statistics as BatchNorm does (the variance unbiased there, biased here)."""
    mean = sums / count
    var = np.maximum(squares / count - mean * mean, 0.0)
    with torch.no_grad():
        running_mean.mul_(1.0 - momentum).add_(torch.from_numpy(mean).float(), alpha=momentum)
        unbiased = var * count / max(count - 1, 1)
        running_var.mul_(1.0 - momentum).add_(torch.from_numpy(unbiased).float(),
                                              alpha=momentum)
        rstd = 1.0 / np.sqrt(var + eps)
        scale = weight.detach() * torch.from_numpy(rstd).float()
        shift = bias.detach() - scale * torch.from_numpy(mean).float()
    return Affine(scale, shift, mean, rstd)


def backward_coefficients(affine: Affine, grad_sums: np.ndarray, grad_x_sums: np.ndarray,
                          count: int) -> tuple[Tensor, Tensor, np.ndarray, np.ndarray]:
    """From the pooled sums of dy and dy * x: BatchNorm's weight and bias gradients, and
    the input gradient's dense part x_coef * x + shift (float64 arrays)."""
    grad_weight = (grad_x_sums - affine.mean * grad_sums) * affine.rstd  # sum of dy * x_hat
    scale = affine.scale.double().numpy()
    x_coef = -scale * affine.rstd * grad_weight / count
    shift = -scale * grad_sums / count - x_coef * affine.mean
    return (torch.from_numpy(grad_weight).float(), torch.from_numpy(grad_sums).float(),
            x_coef, shift)


def signs(scale: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: the sign to pool with (-1 where scale < 0) and |scale|."""
    return (torch.where(scale < 0, -1.0, 1.0).numpy(), scale.abs().numpy())


def pooling_pass(kernels: ModuleType, loop: Callable[..., None], inputs: tuple[Any, ...],
                 shape: tuple[int, ...], scale: Tensor, shift: Tensor
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """Run a compiled pooling loop (`kernels.pool_affine_relu` or `conv_pool_affine_relu`)
    on `inputs` for an (N, C, H, W) map of `shape` under the affine map (scale, shift).
    Returns the block's output (N, C, H/2, W/2), channels-last, and what its backward keeps:
    the pooled map and the pool's choice, (N, H/2, W/2, C)."""
    n, c, h, w = shape
    out = torch.empty(n, h // 2, w // 2, c)
    pooled, choice = torch.empty_like(out), torch.empty(out.shape, dtype=torch.uint8)
    sign, scale_abs = signs(scale)
    kernels.parallel_chunks(torch.get_num_threads())
    loop(*inputs, sign, scale_abs, shift.numpy(), out.numpy(), pooled.numpy(), choice.numpy())
    return out.permute(0, 3, 1, 2), pooled, choice


def _kernel_pool_affine_relu(kernels: ModuleType, x: Tensor, scale: Tensor, shift: Tensor
                             ) -> tuple[Tensor, Tensor, Tensor]:
    x = channels_last(x)
    return pooling_pass(kernels, kernels.pool_affine_relu, (as_rows(x),), x.shape, scale,
                        shift)


class _KernelTraining(torch.autograd.Function):
    """The training-mode block on the compiled loops (see autotune.fast._cnn_kernels)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor,
                running_var: Tensor, momentum: float, eps: float) -> Tensor:
        kernels = cast(ModuleType, block_kernels())
        x = channels_last(x)
        n, _, h, w = x.shape
        n_chunks = kernels.parallel_chunks(torch.get_num_threads())
        sums, squares = kernels.channel_sums(as_rows(x), n_chunks)
        affine = batch_affine(sums, squares, n * h * w, weight, bias, running_mean,
                              running_var, momentum, eps)
        out, pooled, choice = _kernel_pool_affine_relu(kernels, x, affine.scale,
                                                       affine.shift)
        ctx.save_for_backward(x, out, pooled, choice)
        ctx.affine = affine
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        kernels = cast(ModuleType, block_kernels())
        x, out, pooled, choice = ctx.saved_tensors
        n, c, h, w = x.shape
        grads = pooled_backward(kernels, grad_out, out, pooled, ctx.affine, n * h * w)
        grad_x = torch.empty(n, h, w, c)
        kernels.input_grad(as_rows(x), grads.grad_rows, grads.out_rows, choice.numpy(),
                           ctx.affine.scale.numpy(), grads.x_coef, grads.shift,
                           grad_x.numpy())
        return (grad_x.permute(0, 3, 1, 2), grads.weight, grads.bias, None, None, None,
                None)


class PooledGrads(NamedTuple):
    """What the backward of a block takes from its pooled maps."""

    grad_rows: np.ndarray  # grad_out as (N, H/2, W/2, C)
    out_rows: np.ndarray  # the block's output, likewise
    n_chunks: int  # threads the loops run on
    weight: Tensor  # BatchNorm's weight gradient
    bias: Tensor  # and bias gradient
    x_coef: np.ndarray  # BatchNorm's input gradient away from the pooled positions is
    shift: np.ndarray  # x_coef * x + shift (float32, per channel)


def pooled_backward(kernels: ModuleType, grad_out: Tensor, out: Tensor, pooled: Tensor,
                    affine: Affine, count: int) -> PooledGrads:
    """The sums over the pooled maps (kernels.pooled_grad_sums) and what follows from them,
    for a block whose BatchNorm saw `count` values per channel."""
    grad_rows = as_rows(channels_last(grad_out))
    out_rows = as_rows(out)
    sign, _ = signs(affine.scale)
    n_chunks = kernels.parallel_chunks(torch.get_num_threads())
    grad_sums, grad_x_sums = kernels.pooled_grad_sums(grad_rows, out_rows, pooled.numpy(),
                                                      sign, n_chunks)
    weight, bias, x_coef, shift = backward_coefficients(affine, grad_sums, grad_x_sums, count)
    return PooledGrads(grad_rows, out_rows, n_chunks, weight, bias,
                       x_coef.astype(np.float32), shift.astype(np.float32))


def _pool_affine_relu(x: Tensor, scale: Tensor, shift: Tensor
                      ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """relu(max_pool2d(scale * x + shift, 2)) per channel, pooling x itself.

    Returns the output, the pooled map of x (signed: -x in channels with scale < 0), the
    pool's indices and the per-channel signs (None when every scale is >= 0).
    """
    n_channels = x.shape[1]
    if bool((scale < 0).any()):  # the max of scale * x is at the min of x there
        signs = torch.where(scale < 0, -1.0, 1.0)
        x = x * signs.view(1, n_channels, 1, 1)
        scale = scale.abs()
    else:
        signs = None
    pooled, indices = _aten.max_pool2d_with_indices(x, [2, 2], [2, 2])
    out = torch.addcmul(shift.view(1, n_channels, 1, 1), pooled,
                        scale.view(1, n_channels, 1, 1)).relu_()
    return out, pooled, indices, signs


def _memory_format(x: Tensor) -> torch.memory_format:
    channels_last = x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


class _Training(torch.autograd.Function):
    """The training-mode block, with BatchNorm's backward taken through the pooled map."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor,
                running_var: Tensor, momentum: float, eps: float) -> Tensor:
        # batch mean and biased variance; the running ones updated as BatchNorm updates them
        mean, var = torch.batch_norm_update_stats(x, running_mean, running_var, momentum)
        rstd = (var + eps).rsqrt_()
        scale = weight * rstd
        out, pooled, indices, signs = _pool_affine_relu(x, scale, bias - scale * mean)
        ctx.save_for_backward(x, pooled, indices, out, mean, rstd, scale, signs)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        x, pooled, indices, out, mean, rstd, scale, signs = ctx.saved_tensors
        n, c, h, w = x.shape
        per_channel = (1, c, 1, 1)
        # in x's memory format, else every op below mixes layouts (the backward of a
        # Flatten after the block hands over a contiguous gradient of a channels-last map)
        grad_out = grad_out.contiguous(memory_format=_memory_format(x))
        # dy at the pooled positions (ReLU's backward); zero everywhere else
        grad_y = _aten.threshold_backward(grad_out, out, 0)
        rows = grad_y.permute(0, 2, 3, 1).reshape(-1, c)  # (N * H/2 * W/2, C), a view
        # x at the pooled positions, and the sums BatchNorm's backward needs
        x_at = pooled * signs.view(per_channel) if signs is not None else pooled
        grad_bias = rows.sum(0)  # sum of dy
        sum_dy_x = torch.linalg.vecdot(rows, x_at.permute(0, 2, 3, 1).reshape(-1, c), dim=0)
        grad_weight = (sum_dy_x - mean * grad_bias) * rstd  # sum of dy * x_hat
        m = n * h * w
        # dx = scale * dy (pooled positions) - scale * (sum_dy + x_hat * sum_dy_xhat) / m
        x_coef = -scale * rstd * grad_weight / m
        shift = -scale * grad_bias / m - x_coef * mean
        # the pool's indices are positions in x whether it pooled x or -x
        grad_x = _aten.max_pool2d_with_indices_backward(
            grad_y * scale.view(per_channel), x, [2, 2], [2, 2], [0, 0], [1, 1], False, indices)
        grad_x.addcmul_(x, x_coef.view(per_channel)).add_(shift.view(per_channel))
        return grad_x, grad_weight, grad_bias, None, None, None, None
