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

Outputs, gradients and running statistics are BatchNorm's up to float rounding
(tests/test_bn_pool_relu.py); ties inside a pooling window, which the pool breaks by
position, are broken the same way unless rounding in BatchNorm's output makes two different
inputs equal. Measured on this project's 2-core CPU, the mnist study's first block (N=128,
16 channels, 28 x 28), forward and backward: 2.75 -> 2.45 ms (scratch A/B).
"""

from __future__ import annotations

from typing import Any, cast

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
    statistics and an update of the running ones (as `bn` itself does), with gradients."""
    running_mean, running_var = cast(Tensor, bn.running_mean), cast(Tensor, bn.running_var)
    if not bn.training:
        with torch.no_grad():  # running statistics: a fixed affine map
            scale = bn.weight * (running_var + bn.eps).rsqrt()
            shift = bn.bias - scale * running_mean
            return _pool_affine_relu(x, scale, shift)[0]
    cast(Tensor, bn.num_batches_tracked).add_(1)
    return _Training.apply(x, bn.weight, bn.bias, running_mean, running_var, bn.momentum,
                           bn.eps)


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
