"""The loss a trial trains with and the validation metric it is scored by, by name.

The study's direction follows the metric: losses are minimised, accuracy maximised. A new
loss or metric is one entry here; `fit` takes both by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # torch loads only when a trial trains: study files validate without it
    from torch import Tensor


@dataclass(frozen=True)
class Loss:
    """A training loss: (model outputs (N, K), class indices (N,), label smoothing) -> scalar."""

    name: str
    compute: Callable[[Tensor, Tensor, float], Tensor]
    task: str  # "classification": targets are class indices


@dataclass(frozen=True)
class Metric:
    """A validation metric: its name as stored on the study, and which way is better."""

    name: str
    maximize: bool
    tasks: tuple[str, ...]

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return "maximize" if self.maximize else "minimize"


def _cross_entropy(outputs: Tensor, labels: Tensor, label_smoothing: float) -> Tensor:
    import torch.nn.functional as F

    return F.cross_entropy(outputs, labels, label_smoothing=label_smoothing)


def _hinge(outputs: Tensor, labels: Tensor, label_smoothing: float) -> Tensor:
    import torch.nn.functional as F

    # multi-class hinge: mean over classes of max(0, 1 - (x[y] - x[j])), as nn.MultiMarginLoss
    return F.multi_margin_loss(outputs, labels)


LOSSES = {
    "cross_entropy": Loss("cross_entropy", _cross_entropy, "classification"),
    "hinge": Loss("hinge", _hinge, "classification"),
}
METRICS = {
    "val_accuracy": Metric("val_accuracy", maximize=True, tasks=("classification",)),
    "val_loss": Metric("val_loss", maximize=False, tasks=("classification",)),
}
DEFAULT_LOSS = "cross_entropy"
DEFAULT_METRIC = "val_accuracy"


def default_metric(loss: str) -> str:
    """The metric a study scores by when its file names none: accuracy for classifiers."""
    return DEFAULT_METRIC if LOSSES[loss].task == "classification" else "val_loss"


def check_pair(loss: str, metric: str) -> str | None:
    """Why a loss and a metric cannot go together, or None when they can."""
    task = LOSSES[loss].task
    if task not in METRICS[metric].tasks:
        allowed = [m for m, spec in METRICS.items() if task in spec.tasks]
        return f"metric '{metric}' does not fit {task} loss '{loss}'; allowed: " + \
            ", ".join(allowed)
    return None


def evaluate(forward: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, loss: str, metric: str,
             label_smoothing: float = 0.0, batch_size: int = 1024) -> float:
    """`metric` of `forward` on (x, y), without gradients (the caller sets eval mode)."""
    import torch

    if metric == "val_accuracy":
        n_correct = torch.zeros((), dtype=torch.long, device=y.device)
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                outputs = forward(x[start: start + batch_size])
                n_correct += (outputs.argmax(dim=1) == y[start: start + batch_size]).sum()
        return n_correct.item() / len(x)
    total = torch.zeros((), dtype=torch.float64, device=y.device)
    compute = LOSSES[loss].compute
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            part = y[start: start + batch_size]
            batch_loss = compute(forward(x[start: start + batch_size]), part, label_smoothing)
            total += batch_loss.double() * len(part)
    return total.item() / len(x)
