"""A training step for autotune's MLP with its backward pass written out: `mlp_step(model, cfg)`.

For the small MLPs searched on the CPU, much of a step is not arithmetic but autograd:
recording ~25 ops on the way forward, then scheduling ~25 backward nodes, each allocating
its gradient. Written out, the backward of `Flatten -> [Linear -> ReLU (-> Dropout)]* ->
Linear -> cross-entropy` is two matrix products and a sum per layer; ReLU runs inside the
forward product, dropout multiplies its output, and the backward of both is ReLU's backward
on that output (zero where it is zero: not positive, or dropped) times the dropout's
1 / (1 - p). Wide layers (the input layer) take oneDNN's products (`autotune.fast._onednn`).
Every call of a step costs several microseconds whatever its size, so the step makes as few
as it can: one draw for all dropout masks, one log-softmax for the loss and its gradient.

The step draws its dropout masks exactly as `autotune.training._models.Dropout` does (`keep_scales`
on the global generator, same shapes, same order), so a seeded fit repeats the autograd
fit's run: same masks, same gradients up to float rounding (tests/test_mlp_step.py).
"""

from __future__ import annotations

from typing import TypeGuard, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autotune.fast import _onednn as onednn
from autotune.spec._config import TrainConfig
from autotune.training._models import Dropout, keep_scales

M = TypeVar("M", bound=nn.Module)


def mlp_step(model: nn.Module, cfg: TrainConfig) -> WrittenOutStep | None:
    """The written-out step for `model` if it is one of `build_mlp`'s networks, else None.

    Only for the plain float32 fit on the CPU (elsewhere the autograd step is kept: on a GPU
    its overhead overlaps with the kernels), and only for exactly the layers `build_mlp`
    stacks; anything else (another model, a subclass, frozen parameters) returns None.
    """
    if cfg.precision != "fp32" or cfg.compile or type(model) is not nn.Sequential:
        return None
    layers = list(model)
    if not layers or not _exactly(layers[0], nn.Flatten) or layers[0].start_dim != 1:
        return None
    linears: list[nn.Linear] = []
    dropouts: list[float] = []  # per hidden layer; 0.0 where it has no Dropout
    i = 1
    while i < len(layers):
        linear = layers[i]
        if not _exactly(linear, nn.Linear) or linear.bias is None:
            return None
        linears.append(linear)
        i += 1
        if i == len(layers):
            break
        if not _exactly(layers[i], nn.ReLU):
            return None
        i += 1
        dropout = layers[i] if i < len(layers) else None
        if dropout is not None and _exactly(dropout, Dropout):
            if not 0.0 <= dropout.p < 1.0:
                return None
            dropouts.append(dropout.p)
            i += 1
        else:
            dropouts.append(0.0)
    if len(dropouts) != len(linears) - 1 or len(set(dropouts)) > 1 or any(
            p.device.type != "cpu" or not p.requires_grad for p in model.parameters()):
        return None  # build_mlp gives every hidden layer the same dropout
    return WrittenOutStep(model, linears, dropouts[0] if dropouts else 0.0,
                          cfg.label_smoothing)


def _exactly(layer: nn.Module, cls: type[M]) -> TypeGuard[M]:
    """`layer` is a `cls` itself, not a subclass (which may compute something else)."""
    return type(layer) is cls


class WrittenOutStep:
    """Forward, loss and backward of one batch with the gradients computed by hand; and the
    evaluation forward (no dropout), without the module calls and mode switches."""

    def __init__(self, model: nn.Module, linears: list[nn.Linear], dropout: float,
                 label_smoothing: float) -> None:
        self.model = model
        self.weights = [lin.weight for lin in linears]
        self.biases = [lin.bias for lin in linears]
        self.wide = [onednn.wide(w) for w in self.weights]  # products through oneDNN
        self.dropout = dropout  # of every hidden layer; 0.0 = none
        self.label_smoothing = label_smoothing
        self.weight_grads = [torch.empty_like(w) for w in self.weights]
        self.bias_grads = [torch.empty_like(b) for b in self.biases]
        self._minus: dict[int, Tensor] = {}  # _minus_target by batch size

    def __call__(self, inputs: Tensor, labels: Tensor) -> Tensor:
        if not self.model.training:
            raise RuntimeError("the written-out MLP step trains; call model.train() first")
        with torch.no_grad():
            loss = self._forward_backward(inputs.flatten(1), labels)
        # where zero_grad(set_to_none) + backward would leave them
        for p, grad in zip(self.weights, self.weight_grads, strict=True):
            p.grad = grad
        for p, grad in zip(self.biases, self.bias_grads, strict=True):
            p.grad = grad
        return loss

    def accuracy(self, x: Tensor, y: Tensor, batch_size: int = 1024) -> float:
        """What `train.evaluate(model, x, y)` gives: the model in eval mode (dropout off),
        for ~1/4 of its Python work on a small validation set. Wide layers take oneDNN's
        product as in training (the input layer on 1,280 images: 1.38 -> 0.70 ms on a Zen 5),
        so a logit may differ from the module's in its last bits."""
        if len(x) == 0 or len(x) != len(y):
            raise ValueError(f"x and y must be non-empty and equally long, got {len(x)=}, "
                             f"{len(y)=}")
        n_correct = 0
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                a = x[start : start + batch_size].flatten(1)
                for weight, bias, wide in zip(self.weights[:-1], self.biases[:-1],
                                              self.wide[:-1], strict=True):
                    a = onednn.linear(a, weight, bias, wide, relu=True)
                logits = onednn.linear(a, self.weights[-1], self.biases[-1], self.wide[-1])
                # .item() per chunk: on the CPU (this step's only device) it waits for nothing
                n_correct += int((logits.argmax(dim=1) == y[start : start + batch_size]).sum())
        return n_correct / len(x)

    def _forward_backward(self, x: Tensor, labels: Tensor) -> Tensor:
        # forward: a_k = input of layer k; keeps[k] = dropout multipliers of layer k's output
        n_rows = len(x)
        keeps = iter(keep_scales([n_rows * w.shape[0] for w in self.weights[:-1]],
                                 self.dropout) if self.dropout else [])
        activations: list[Tensor] = [x]
        for weight, bias, wide in zip(self.weights[:-1], self.biases, self.wide, strict=False):
            a = onednn.linear(activations[-1], weight, bias, wide, relu=True)  # (B, out)
            if self.dropout:
                a.mul_(next(keeps).view_as(a))
            activations.append(a)
        logits = onednn.linear(activations[-1], self.weights[-1], self.biases[-1],
                               self.wide[-1])

        # loss = cross-entropy with the target smoothed as F.cross_entropy smooths it: (1 - s)
        # on the label, s / n_classes on every class; d loss / d logits = (softmax - target) / B
        n, n_classes = logits.shape
        s = self.label_smoothing
        log_p = torch.log_softmax(logits, dim=1)
        loss = F.nll_loss(log_p, labels)
        if s:
            loss = loss * (1.0 - s) - log_p.mean() * s
        grad = log_p.exp_()  # softmax
        grad.scatter_add_(1, labels.unsqueeze(1), self._minus_target(n))
        if s:
            grad.sub_(s / n_classes)
        grad.mul_(1.0 / n)
        keep_scale = 1.0 / (1.0 - self.dropout)
        for k in range(len(self.weights) - 1, -1, -1):
            self.weight_grads[k] = onednn.grad_weight(grad, activations[k], self.wide[k],
                                                      out=self.weight_grads[k])
            torch.sum(grad, dim=0, out=self.bias_grads[k])
            if k:
                # ReLU and dropout: zero where a_k is (not positive, or dropped), else the
                # dropout's 1 / (1 - p), which a_k's kept values were scaled by
                grad = _threshold_backward(
                    onednn.grad_input(grad, self.weights[k], self.wide[k], scale=keep_scale),
                    activations[k], 0)
        return loss

    def _minus_target(self, n_rows: int) -> Tensor:
        """(n_rows, 1) of -(1 - label_smoothing): the label's share of the target, kept."""
        minus = self._minus.get(n_rows)
        if minus is None:
            minus = self._minus[n_rows] = torch.full((n_rows, 1), -(1.0 - self.label_smoothing))
        return minus


_threshold_backward = torch.ops.aten.threshold_backward.default  # ReLU's backward
