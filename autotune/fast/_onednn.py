"""A linear layer's three matrix products through oneDNN on the CPU, for wide layers.

PyTorch sends float32 matrix products on the CPU to MKL, which on AMD processors runs its
AVX2 code; oneDNN, also inside PyTorch (its CPU convolutions), picks kernels by the
instructions the processor has, AVX-512 included. On a 2-core AMD EPYC of family 26 (Zen 5,
AVX-512), batch 128, float32, median us (scratch A/B of the two, alternated in one process):

    layer (in -> out)   forward  MKL / oneDNN   weight grad  MKL / oneDNN   input grad
    784 -> 128                   237 / 114                   238 / 131       235 / 122
    1568 -> 128                  305 / 153                   344 / 165       343 / 151
    784 -> 64                    105 / 69                    109 / 75        100 / 63
    128 -> 128                    63 / 54                     64 / 88         56 / 47

On a 2-core AMD EPYC of family 23 (Zen 2: AVX2, no AVX-512), the same sizes the other way
round: 784 -> 128 forward 341 / 463-493, weight grad 354 / 412-427 us, and the written-out
step of an MLP 2 x 64 / 3 x 128 trains 13% / 5% more images per second on MKL. oneDNN's
lead comes from its AVX-512 kernels, which MKL does not run on AMD processors.

So layers with at least WIDE_IN_FEATURES inputs (the input layer of an MLP on 28 x 28
images, a CNN's first fully connected layer) take oneDNN where torch's CPU kernels use
AVX-512 (`FASTER_HERE`); narrower ones, and all on CPUs without AVX-512, keep MKL, which is
as fast there and faster for the weight gradient. The op is `torch.ops.mkldnn.
_linear_pointwise`, which PyTorch's compiler emits for CPU linear layers; where a build lacks
it, every product falls back to MKL (`torch.addmm` / `torch.mm`), with the same results up to
float rounding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

WIDE_IN_FEATURES = 512  # from here on oneDNN beats MKL on all three products (table above)
# whether this CPU runs oneDNN's AVX-512 kernels, which beat MKL's here (table above)
FASTER_HERE = torch.backends.cpu.get_cpu_capability().startswith("AVX512")

_linear_pointwise: Any
try:
    _linear_pointwise = torch.ops.mkldnn._linear_pointwise.default
except (AttributeError, RuntimeError):  # a build without oneDNN
    _linear_pointwise = None


def available() -> bool:
    """Whether this torch build has oneDNN's linear op (else every product takes MKL)."""
    return _linear_pointwise is not None


def wide(weight: Tensor) -> bool:
    """Whether a float32 CPU layer with this (out, in) weight takes oneDNN (on a CPU where it
    is the faster, `FASTER_HERE`). Decide once per layer and pass it on: the products below
    are called every step."""
    return (_linear_pointwise is not None and FASTER_HERE and weight.device.type == "cpu"
            and weight.dtype == torch.float32 and weight.shape[1] >= WIDE_IN_FEATURES)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None, wide: bool, relu: bool = False
           ) -> Tensor:
    """x @ weight.T + bias, then ReLU if asked (fused into the product by oneDNN).

    x: (B, in), weight: (out, in), bias: (out,) -> (B, out); `wide`: `wide(weight)`.
    """
    if wide:
        return _linear_pointwise(x, weight, bias, "relu" if relu else "none", [], "")
    out = torch.addmm(bias, x, weight.t()) if bias is not None else torch.mm(x, weight.t())
    return out.relu_() if relu else out


def grad_weight(grad_out: Tensor, x: Tensor, wide: bool, out: Tensor | None = None
                ) -> Tensor:
    """grad_out.T @ x: the weight's gradient of `linear(x, weight, ...)`.

    grad_out: (B, out), x: (B, in) -> (out, in); written into `out` if given where MKL
    computes it, a new tensor where oneDNN does.
    """
    if wide:
        return _linear_pointwise(grad_out.t(), x.t(), None, "none", [], "")
    return torch.mm(grad_out.t(), x) if out is None else torch.mm(grad_out.t(), x, out=out)


def grad_input(grad_out: Tensor, weight: Tensor, wide: bool, scale: float = 1.0) -> Tensor:
    """scale * grad_out @ weight: the input's gradient of `linear(x, weight, ...)`, times
    `scale` (MKL multiplies inside the product); (B, in)."""
    if wide:
        grad = _linear_pointwise(grad_out, weight.t(), None, "none", [], "")
        return grad.mul_(scale) if scale != 1.0 else grad
    if scale != 1.0:
        return torch.addmm(_ZERO, grad_out, weight, beta=0.0, alpha=scale)
    return torch.mm(grad_out, weight)


_ZERO = torch.zeros(())  # addmm's added term: broadcast, and ignored at beta=0


class WideLinear(torch.autograd.Function):
    """`F.linear` whose three products go through oneDNN (2-D inputs)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _linear_pointwise(x, weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad
        grad_x = grad_input(grad, weight, wide=True) if need_x else None
        grad_w = grad_weight(grad, x, wide=True) if need_weight else None
        grad_b = grad.sum(0) if ctx.has_bias and need_bias else None
        return grad_x, grad_w, grad_b

