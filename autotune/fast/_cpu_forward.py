"""A model's forward pass on the CPU in float32, with faster equivalents for the runs of
layers it recognises: `cpu_forward(model)`.

`fit` trains through what this returns instead of the model itself. For an `nn.Sequential`
(what `autotune.training._models` builds) it steps through the same layer objects, so parameters,
buffers and train / eval modes are the model's, but computes

  - a first 3 x 3 convolution of one-channel images with its BatchNorm2d -> MaxPool2d(2)
    -> ReLU as one step (`autotune.fast._gray_block`),
  - BatchNorm2d -> MaxPool2d(2) -> ReLU as one step (`autotune.fast._bn_pool_relu`),
  - wide linear layers (`autotune.fast._onednn.wide`) with oneDNN's matrix products,
  - a first 3 x 3 convolution of one-channel images as a matrix product
    (`autotune.fast._conv_gemm`),

and every other layer by calling it. Each replacement gives the layers' outputs and
gradients up to float rounding (tests/test_cpu_forward.py). Anything else, and any model
that is not an `nn.Sequential` of float32 CPU parameters, is returned as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch import Tensor, nn

from autotune.fast import _conv_gemm as conv_gemm
from autotune.fast import _onednn as onednn
from autotune.fast._bn_pool_relu import bn_pool_relu, fusable
from autotune.fast._gray_block import gray_block

Step = Callable[[Tensor], Tensor]


class PlannedSequential(nn.Module):
    """Runs `model`'s layers in order, a recognised run of them as one step."""

    def __init__(self, model: nn.Sequential, steps: list[Step]) -> None:
        super().__init__()
        self.model = model  # a submodule: train() and eval() reach its layers
        self.steps = steps

    def forward(self, x: Tensor) -> Tensor:
        for step in self.steps:
            x = step(x)
        return x


def cpu_forward(model: nn.Module) -> nn.Module:
    """`model`, or a `PlannedSequential` over it where one of its runs has a faster step."""
    if type(model) is not nn.Sequential or any(
            p.device.type != "cpu" or p.dtype != torch.float32 for p in model.parameters()):
        return model
    layers = list(model)
    steps: list[Step] = []
    replaced = False
    i = 0
    while i < len(layers):
        layer = layers[i]
        if (i == 0 and i + 4 <= len(layers) and conv_gemm.fits(layer)
                and fusable(*layers[i + 1 : i + 4])):  # the first conv and its block
            steps.append(_gray_block(cast(nn.Conv2d, layer),
                                     cast(nn.BatchNorm2d, layers[i + 1])))
            replaced, i = True, i + 4
            continue
        if i + 3 <= len(layers) and fusable(*layers[i : i + 3]):
            steps.append(_fused_block(cast(nn.BatchNorm2d, layer)))
            replaced, i = True, i + 3
            continue
        if type(layer) is nn.Linear and onednn.wide(layer.weight):
            steps.append(_wide_linear(layer))
            replaced = True
        elif conv_gemm.fits(layer):
            steps.append(_gray_conv(cast(nn.Conv2d, layer)))
            replaced = True
        else:
            steps.append(layer)
        i += 1
    return PlannedSequential(model, steps) if replaced else model


def _gray_block(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> Step:
    return lambda x: gray_block(x, conv, bn)


def _fused_block(bn: nn.BatchNorm2d) -> Step:
    return lambda x: bn_pool_relu(x, bn)


def _gray_conv(conv: nn.Conv2d) -> Step:
    return lambda x: conv_gemm.conv3x3_gray(x, conv)


def _wide_linear(linear: nn.Linear) -> Step:
    def step(x: Tensor) -> Tensor:
        if x.dim() != 2:
            return linear(x)
        return onednn.WideLinear.apply(x, linear.weight, linear.bias)

    return step
