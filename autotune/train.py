"""Train one model on in-memory tensors: `fit(model, data, cfg, on_epoch)`.

Knows nothing of Optuna: reporting and pruning reach the loop through `on_epoch`, whose
exceptions (e.g. `optuna.TrialPruned`) propagate untouched.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ExponentialLR, LRScheduler

from autotune.config import DEVICES, TrainConfig
from autotune.errors import Diverged, UsageError


@dataclass(frozen=True)
class EpochResult:
    """What one epoch of `fit` measured; passed to `on_epoch` and kept in `FitResult`."""

    epoch: int  # 1-based
    train_loss: float  # mean of the epoch's batch losses
    val_accuracy: float  # in [0, 1]
    lr: float  # learning rate used during this epoch
    seconds: float  # training time of this epoch, evaluation excluded


@dataclass(frozen=True)
class FitResult:
    """The whole run: every epoch, and the best one by validation accuracy."""

    epochs: list[EpochResult]
    best_epoch: int  # 1-based epoch with the highest val accuracy (first on ties)
    best_val_accuracy: float
    train_time_s: float  # sum of epoch training seconds (evaluation excluded)


@dataclass(frozen=True)
class TrainState:
    """Everything needed to continue a fit after `epoch` epochs, exactly as if never stopped.

    Holds only tensors, numbers, strings, lists and dicts, so `torch.load(weights_only=True)`
    can read a saved one without unpickling arbitrary objects.
    """

    epoch: int  # epochs completed
    model: dict[str, Any]  # model.state_dict()
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    shuffle_rng: Tensor  # state of the batch-order generator
    torch_rng: Tensor  # state of torch's global CPU RNG (dropout)
    epochs: list[dict[str, Any]]  # EpochResult fields of the epochs so far

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        return cls(**data)


Params = Iterable[nn.Parameter]

# The one list of optimizers; keys match config.OPTIMIZERS and the `optimizer` param.
OPTIMIZER_FACTORIES: dict[str, Callable[[Params, TrainConfig], Optimizer]] = {
    "sgd": lambda params, cfg: torch.optim.SGD(
        params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        # torch refuses nesterov without momentum; treat it as off there
        nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    ),
    "adam": lambda params, cfg: torch.optim.Adam(
        params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay
    ),
    "adamw": lambda params, cfg: torch.optim.AdamW(
        params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay
    ),
    "nadam": lambda params, cfg: torch.optim.NAdam(
        params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay
    ),
    "rmsprop": lambda params, cfg: torch.optim.RMSprop(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    ),
    "adadelta": lambda params, cfg: torch.optim.Adadelta(
        params, lr=cfg.lr, weight_decay=cfg.weight_decay
    ),
}


def build_optimizer(params: Params, cfg: TrainConfig) -> Optimizer:
    """The torch optimizer named by `cfg.optimizer`, with the config's hyperparameters."""
    factory = OPTIMIZER_FACTORIES.get(cfg.optimizer)
    if factory is None:
        available = ", ".join(sorted(OPTIMIZER_FACTORIES))
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; available: {available}")
    return factory(params, cfg)


def build_scheduler(optimizer: Optimizer, cfg: TrainConfig) -> LRScheduler:
    """Multiply the learning rate by `cfg.decay_rate` at each `step()` (once per epoch)."""
    return ExponentialLR(optimizer, gamma=cfg.decay_rate)


def resolve_device(name: str) -> torch.device:
    """Turn a --device value (auto, cpu, cuda) into a torch.device; auto prefers CUDA."""
    if name not in DEVICES:
        raise UsageError(f"unknown device {name!r}; available: {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            "--device cuda requested but CUDA is not available; use --device cpu or auto"
        )
    return torch.device(name)


def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1024) -> float:
    """Accuracy of `model` on (x, y) in eval mode, without gradients; restores the mode."""
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"x and y must be non-empty and equally long, got {len(x)=}, {len(y)=}")
    was_training = model.training
    model.eval()
    n_correct = torch.zeros((), dtype=torch.long, device=y.device)
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(x[start : start + batch_size])
            n_correct += (logits.argmax(dim=1) == y[start : start + batch_size]).sum()
    model.train(was_training)
    return n_correct.item() / len(x)


def fit(
    model: nn.Module,
    x_train: Tensor,
    y_train: Tensor,
    x_val: Tensor,
    y_val: Tensor,
    cfg: TrainConfig,
    on_epoch: Callable[[EpochResult], None] | None = None,
    *,
    start: TrainState | None = None,
    on_checkpoint: Callable[[TrainState], None] | None = None,
) -> FitResult:
    """Train `model` for `cfg.max_epochs` epochs on tensors already on one device.

    x_*: (N, C, H, W) float, y_*: (N,) int64 class indices. The model is moved to the data's
    device. Each epoch shuffles with a generator seeded from `cfg.seed` (a different order
    per epoch, the same sequence per run) and keeps the last partial batch; torch's global
    RNG is seeded too, so dropout repeats and two runs of one config on CPU match exactly.
    Raises `Diverged` when an epoch's mean loss is NaN or infinite. `on_epoch` runs after
    each epoch's evaluation; whatever it raises stops training and propagates unchanged.
    `on_checkpoint`, if given, receives the state after each epoch (before `on_epoch`), and
    `start` continues from such a state: epochs it holds are not trained again.
    """
    if len(x_train) == 0 or len(x_train) != len(y_train):
        raise ValueError(
            f"x_train and y_train must be non-empty and equally long, got "
            f"{len(x_train)=}, {len(y_train)=}"
        )
    device = x_train.device
    torch.manual_seed(cfg.seed)
    model.to(device)
    optimizer = build_optimizer(model.parameters(), cfg)
    scheduler = build_scheduler(optimizer, cfg)
    shuffle = torch.Generator(device=device)
    shuffle.manual_seed(cfg.seed)
    n_train = len(x_train)
    n_batches = math.ceil(n_train / cfg.batch_size)
    epochs: list[EpochResult] = []
    if start is not None:
        model.load_state_dict(start.model)
        optimizer.load_state_dict(start.optimizer)
        scheduler.load_state_dict(start.scheduler)
        shuffle.set_state(start.shuffle_rng)
        torch.set_rng_state(start.torch_rng)
        epochs = [EpochResult(**e) for e in start.epochs]

    for epoch in range(len(epochs) + 1, cfg.max_epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        # the queue is empty here (evaluate ended with .item()), and the .item() below waits
        # for this epoch's kernels, so wall time is training time on GPU too
        start_s = time.perf_counter()
        model.train()
        order = torch.randperm(n_train, generator=shuffle, device=device)
        loss_sum = torch.zeros((), device=device)
        for first in range(0, n_train, cfg.batch_size):
            idx = order[first : first + cfg.batch_size]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
        train_loss = (loss_sum / n_batches).item()
        seconds = time.perf_counter() - start_s
        if not math.isfinite(train_loss):
            raise Diverged(
                f"loss became {train_loss} in epoch {epoch} "
                f"(lr={cfg.lr:g}, optimizer={cfg.optimizer})"
            )
        scheduler.step()

        result = EpochResult(epoch, train_loss, evaluate(model, x_val, y_val), lr, seconds)
        epochs.append(result)
        if on_checkpoint is not None:
            on_checkpoint(TrainState(
                epoch=epoch, model=model.state_dict(), optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(), shuffle_rng=shuffle.get_state(),
                torch_rng=torch.get_rng_state(), epochs=[dataclasses.asdict(e) for e in epochs]))
        if on_epoch is not None:
            on_epoch(result)

    best = max(epochs, key=lambda e: e.val_accuracy)  # max keeps the first of equals
    return FitResult(
        epochs=epochs,
        best_epoch=best.epoch,
        best_val_accuracy=best.val_accuracy,
        train_time_s=sum(e.seconds for e in epochs),
    )
