"""The loss a trial trains with and the validation metric it is scored by, by name.

Two tasks: classification (targets are class indices (N,), the model gives one output per
class) and regression (targets are floats (N, K), the model gives K outputs). The study's
direction follows the metric: losses and errors are minimised, accuracy and R² maximised.
A new loss or metric is one entry here; `fit` takes both by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # torch loads only when a trial trains: study files validate without it
    from torch import Tensor


@dataclass(frozen=True)
class Loss:
    """A training loss: (model outputs (N, K), targets, label smoothing) -> scalar.

    Targets are class indices (N,) for a classification loss, floats (N, K) for a
    regression loss (outputs of any shape with N * K elements are taken as (N, K)).
    """

    name: str
    compute: Callable[[Tensor, Tensor, float], Tensor]
    task: str  # "classification" or "regression"


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


def _regression(name: str) -> Callable[[Tensor, Tensor, float], Tensor]:
    def compute(outputs: Tensor, targets: Tensor, label_smoothing: float) -> Tensor:
        import torch.nn.functional as F

        # a model giving (N,) or (N, 1, 1) for one target is fine: same elements, same order
        outputs = outputs.reshape(targets.shape)
        if name == "mse":
            return F.mse_loss(outputs, targets)
        if name == "l1":
            return F.l1_loss(outputs, targets)
        if name == "smooth_l1":
            return F.smooth_l1_loss(outputs, targets)
        return F.huber_loss(outputs, targets)

    return compute


TASKS = ("classification", "regression")
LOSSES = {
    "cross_entropy": Loss("cross_entropy", _cross_entropy, "classification"),
    "hinge": Loss("hinge", _hinge, "classification"),
    **{name: Loss(name, _regression(name), "regression")
       for name in ("mse", "l1", "smooth_l1", "huber")},
}
METRICS = {
    "val_accuracy": Metric("val_accuracy", maximize=True, tasks=("classification",)),
    "val_loss": Metric("val_loss", maximize=False, tasks=TASKS),  # the training loss, on val
    "val_rmse": Metric("val_rmse", maximize=False, tasks=("regression",)),
    "val_mae": Metric("val_mae", maximize=False, tasks=("regression",)),
    "val_r2": Metric("val_r2", maximize=True, tasks=("regression",)),  # mean over targets
}
DEFAULT_LOSS = "cross_entropy"
DEFAULT_METRIC = "val_accuracy"


def default_metric(loss: str) -> str:
    """The metric a study scores by when its file names none: accuracy for classifiers,
    the loss itself for regression."""
    return DEFAULT_METRIC if LOSSES[loss].task == "classification" else "val_loss"


def check_pair(loss: str, metric: str) -> str | None:
    """Why a loss and a metric cannot go together, or None when they can."""
    task = LOSSES[loss].task
    if task not in METRICS[metric].tasks:
        allowed = [m for m, spec in METRICS.items() if task in spec.tasks]
        return f"metric '{metric}' does not fit {task} loss '{loss}'; allowed: " + \
            ", ".join(allowed)
    return None


def task(loss: str) -> str:
    """"classification" or "regression": what targets a loss trains on."""
    return LOSSES[loss].task


def evaluate(forward: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, loss: str, metric: str,
             label_smoothing: float = 0.0, batch_size: int = 1024) -> float:
    """`metric` of `forward` on (x, y), without gradients (the caller sets eval mode)."""
    return evaluate_batches(forward, ((x[start: start + batch_size], y[start: start + batch_size])
                                      for start in range(0, len(x), batch_size)),
                            loss, metric, label_smoothing)


def evaluate_batches(forward: Callable[[Tensor], Tensor], batches: Iterable[tuple[Tensor, Tensor]],
                     loss: str, metric: str, label_smoothing: float = 0.0) -> float:
    """`metric` of `forward` over (inputs, targets) batches, without gradients (the caller
    sets eval mode). Sums are kept on the batches' device and read once at the end."""
    import torch

    n = 0
    sums: dict[str, Tensor] = {}

    def add(key: str, value: Tensor) -> None:
        sums[key] = sums[key] + value if key in sums else value

    compute = LOSSES[loss].compute
    with torch.no_grad():
        for inputs, targets in batches:
            out = forward(inputs)
            n += len(targets)
            if metric == "val_accuracy":
                add("correct", (out.argmax(dim=1) == targets).sum())
            elif metric == "val_loss":
                add("loss", compute(out, targets, label_smoothing).double() * len(targets))
            else:  # regression metrics, from per-target sums (float64: no drift over batches)
                wide = targets.double().reshape(len(targets), -1)
                error = out.double().reshape(wide.shape) - wide
                add("sq", (error ** 2).sum(0))
                add("abs", error.abs().sum(0))
                add("y", wide.sum(0))
                add("yy", (wide ** 2).sum(0))
    if n == 0:
        raise ValueError("nothing to evaluate: the split is empty")
    if metric == "val_accuracy":
        return sums["correct"].item() / n
    if metric == "val_loss":
        return float(sums["loss"].item()) / n
    if metric == "val_rmse":
        return float((sums["sq"].mean() / n).sqrt().item())
    if metric == "val_mae":
        return float((sums["abs"].mean() / n).item())
    total_sq = (sums["yy"] - sums["y"] ** 2 / n).clamp_min(0)  # n * variance, per target
    # a constant target has no variance to explain: R² is 1 if predicted exactly, else 0
    r2 = torch.where(total_sq > 1e-12 * sums["yy"].clamp_min(1e-300),
                     1 - sums["sq"] / total_sq.clamp_min(1e-300), (sums["sq"] == 0).double())
    return float(r2.mean().item())
