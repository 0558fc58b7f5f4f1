"""Train one model on in-memory tensors: `fit(model, data, cfg, on_epoch)`.

Knows nothing of Optuna: reporting and pruning reach the loop through `on_epoch`, whose
exceptions (e.g. `optuna.TrialPruned`) propagate untouched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, ExponentialLR, LRScheduler, OneCycleLR

from autotune.errors import Diverged, UsageError
from autotune.spec._config import DEVICES, TrainConfig
from autotune.training import _losses as losses
from autotune.training import _rng as rng
from autotune.training._augment import augment
from autotune.training._losses import DEFAULT_LOSS, DEFAULT_METRIC, LOSSES, METRICS
from autotune.training._streams import Streamed


@dataclass(frozen=True)
class EpochResult:
    """What one epoch of `fit` measured; passed to `on_epoch` and kept in `FitResult`."""

    epoch: int  # 1-based
    train_loss: float  # mean of the epoch's batch losses
    value: float  # the validation metric (fit's `metric`: val_accuracy in [0, 1], val_loss)
    lr: float  # learning rate at the start of this epoch (per-batch schedules move it within)
    seconds: float  # training time of this epoch, evaluation excluded
    val_seconds: float = 0.0  # time of this epoch's evaluation on the validation split

    def as_dict(self) -> dict[str, float]:
        """The fields by name, as dataclasses.asdict gives them (its deep copy, which plain
        numbers do not need, costs 20x more: ~0.1 ms for a 10-epoch learning curve)."""
        return dict(vars(self))

    @classmethod
    def from_dict(cls, data: dict[str, float]) -> EpochResult:
        """As `as_dict` wrote it; checkpoints written before the metric was chosen by name
        call the value val_accuracy."""
        data = dict(data)
        if "val_accuracy" in data:
            data["value"] = data.pop("val_accuracy")
        return cls(**data)  # type: ignore[arg-type]


@dataclass(frozen=True)
class FitResult:
    """The whole run: every epoch, and the best one by the validation metric."""

    epochs: list[EpochResult]
    best_epoch: int  # 1-based epoch with the best value (first on ties)
    best_value: float
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
    cuda_rng: Tensor | None = None  # state of torch's RNG on the CUDA device; None on CPU

    def to_dict(self) -> dict[str, Any]:
        # shallow: dataclasses.asdict would deep-copy every tensor just to be serialised
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        return cls(**data)


Params = Iterable[nn.Parameter] | list[dict[str, Any]]  # tensors, or param groups


class WrittenStep(Protocol):
    """A whole training step without autograd, for one model (a speed-up's)."""

    def __call__(self, inputs: Tensor, labels: Tensor) -> Tensor:
        """Forward and backward of one batch: returns the loss, leaves gradients in p.grad."""

    def accuracy(self, x: Tensor, y: Tensor) -> float:
        """Validation accuracy on (x, y)."""


class FitSpeedup(Protocol):
    """A speed-up `fit` consults (registered by a plugin, e.g. autotune.fast): it may take
    over a built-in model's step, forward pass or optimizer step, and may decline any of
    them with None. A `plain` fit (every user model) uses only `prepare`."""

    def prepare(self) -> None:
        """Once per fit, before the optimizer is built, whatever the model (process-wide
        settings that change no result)."""

    def written_step(self, model: nn.Module, cfg: TrainConfig) -> WrittenStep | None:
        """The model's whole step written out, or None."""

    def forward(self, model: nn.Module, cfg: TrainConfig) -> Callable[[Tensor], Tensor] | None:
        """A faster equivalent of `model(x)` (float32), or None."""

    def optimizer_step(self, optimizer: Optimizer) -> Callable[[], object] | None:
        """A faster equivalent of `optimizer.step()`, or None."""


_speedup: FitSpeedup | None = None


def fit_speedup() -> FitSpeedup | None:
    """The speed-up `fit` consults now (None: plain torch for every model)."""
    return _speedup


def use_fit_speedup(speedup: FitSpeedup | None) -> FitSpeedup | None:
    """Make `fit` consult `speedup` (None: plain torch for every model); returns the one it
    replaces, so a caller can put it back."""
    global _speedup
    previous, _speedup = _speedup, speedup
    return previous

# One fused kernel per step instead of a few per parameter tensor: for the small MLPs searched
# here, ~15% more images/s on CPU (Adam, SGD); on CUDA it saves launches. The others use foreach.
_FUSED: dict[str, Any] = {"fused": True}
_FOREACH: dict[str, Any] = {"foreach": True}

# The one list of optimizers; keys match config.OPTIMIZERS and the `optimizer` param.
OPTIMIZER_FACTORIES: dict[str, Callable[[Params, TrainConfig], Optimizer]] = {
    "sgd": lambda params, cfg: torch.optim.SGD(
        params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        # torch refuses nesterov without momentum; treat it as off there
        nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
        **_FUSED,
    ),
    "adam": lambda params, cfg: torch.optim.Adam(
        params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay,
        **_FUSED,
    ),
    "adamw": lambda params, cfg: torch.optim.AdamW(
        params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay,
        **_FUSED,
    ),
    "nadam": lambda params, cfg: torch.optim.NAdam(
        params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay,
        **_FOREACH,
    ),
    "rmsprop": lambda params, cfg: torch.optim.RMSprop(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **_FOREACH
    ),
    "adadelta": lambda params, cfg: torch.optim.Adadelta(
        params, lr=cfg.lr, weight_decay=cfg.weight_decay, **_FOREACH
    ),
}


def param_groups(model: nn.Module, cfg: TrainConfig) -> Params:
    """The model's parameters, for its optimizer: one group at lr, or, with a
    head_lr_multiplier, the last nn.Linear's (the head's) at lr x multiplier after the
    rest at lr."""
    if cfg.head_lr_multiplier == 1.0:
        return model.parameters()
    head = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not head:
        raise ValueError("head_lr_multiplier needs a model whose head is an nn.Linear; this "
                         "one has none")
    head_ids = {id(p) for p in head[-1].parameters()}
    rest = [p for p in model.parameters() if id(p) not in head_ids]
    groups: list[dict[str, Any]] = [
        {"params": rest},
        {"params": list(head[-1].parameters()), "lr": cfg.lr * cfg.head_lr_multiplier}]
    return groups


def build_optimizer(params: Params, cfg: TrainConfig) -> Optimizer:
    """The torch optimizer named by `cfg.optimizer`, with the config's hyperparameters."""
    factory = OPTIMIZER_FACTORIES.get(cfg.optimizer)
    if factory is None:
        available = ", ".join(sorted(OPTIMIZER_FACTORIES))
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; available: {available}")
    return factory(params, cfg)


# Schedules stepped after every batch; the others step once per epoch.
PER_BATCH_SCHEDULES = ("cosine", "onecycle")


def build_scheduler(optimizer: Optimizer, cfg: TrainConfig, steps_per_epoch: int = 1
                    ) -> LRScheduler:
    """The LR schedule `cfg.schedule` names, to be stepped as `schedule_steps_per_epoch` says.

    exponential: x `decay_rate` per epoch. cosine: from lr down to 0 over the run's
    `max_epochs * steps_per_epoch` batches. onecycle: from lr/25 up to lr over the first
    `warmup_fraction` of those batches, then cosine down to lr/25e4; momentum and betas are
    the config's own (not cycled), so they stay searchable hyperparameters.
    """
    total_steps = cfg.max_epochs * steps_per_epoch
    if cfg.schedule == "cosine":
        return CosineAnnealingLR(optimizer, T_max=total_steps)
    if cfg.schedule == "onecycle":
        # each group's own peak: the head's is lr x head_lr_multiplier
        return OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                          total_steps=total_steps,
                          pct_start=cfg.warmup_fraction, cycle_momentum=False)
    return ExponentialLR(optimizer, gamma=cfg.decay_rate)


def schedule_steps_per_epoch(n_train: int, cfg: TrainConfig) -> int:
    """How often the schedule steps in one epoch: after each batch, or once at its end."""
    return n_batches_per_epoch(n_train, cfg) if cfg.schedule in PER_BATCH_SCHEDULES else 1


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


def evaluate(model: nn.Module, x: Tensor | Streamed, y: Tensor | None, batch_size: int = 1024,
             *, loss: str = DEFAULT_LOSS, metric: str = DEFAULT_METRIC) -> float:
    """`metric` (accuracy by default) of `model` on (x, y), or on a streamed split (y None),
    in eval mode, without gradients; restores the mode."""
    if isinstance(x, Streamed):
        batches: Iterable[tuple[Tensor, Tensor]] = x.batches(x.loader(batch_size))
    else:
        if y is None or len(x) == 0 or len(x) != len(y):
            raise ValueError(f"x and y must be non-empty and equally long, got {len(x)=}, "
                             f"{None if y is None else len(y)=}")
        batches = ((x[i: i + batch_size], y[i: i + batch_size])
                   for i in range(0, len(x), batch_size))
    was_training = model.training
    model.eval()
    value = losses.evaluate_batches(model, batches, loss, metric)
    model.train(was_training)
    return value


def autocast(device: torch.device, cfg: TrainConfig) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast when `cfg.precision` is bf16 (on any device: asked for explicitly).

    On CUDA (Ampere or later) bf16 halves memory traffic and uses tensor cores; on CPUs
    without AVX512-BF16 or AMX it is emulated and slower (measured: README, Performance).
    """
    if cfg.precision != "bf16":  # fp32: nothing to switch, so nothing to pay on each step
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def compile_model(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """`torch.compile(model)` when `cfg.compile`, else the model itself.

    Compiling costs ~20 s on the first step of every new architecture (each trial) and ran
    slower than eager for small models on CPU, so it is only for long GPU trials; it is never
    switched on implicitly. Parameters stay shared: the returned module trains `model`.
    """
    return torch.compile(model) if cfg.compile else model  # type: ignore[return-value]


def wants_channels_last(model: nn.Module) -> bool:
    """Conv nets (4-d weights) run faster on NHWC inputs, on CPU (oneDNN) and GPU alike."""
    return any(p.dim() == 4 for p in model.parameters())


def n_batches_per_epoch(n_train: int, cfg: TrainConfig) -> int:
    """Batches in one epoch: all of them (the last one partial) unless capped by the config."""
    n_batches = math.ceil(n_train / cfg.batch_size)
    return min(n_batches, cfg.max_batches_per_epoch) if cfg.max_batches_per_epoch else n_batches


def batches(x: Tensor, y: Tensor, cfg: TrainConfig, generator: torch.Generator,
            fill: Tensor | float = 0.0, channels_last: bool = False
            ) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of (inputs, labels) batches: a fresh shuffle, augmented as `cfg` says.

    The order comes from `generator`, and so does the augmentation, so a run (and a run
    resumed from a TrainState) repeats exactly. Indexing copies each batch out of `x`, so
    augmentation never touches the dataset itself.
    """
    order = torch.randperm(len(x), generator=generator, device=x.device)
    for first in range(0, n_batches_per_epoch(len(x), cfg) * cfg.batch_size, cfg.batch_size):
        idx = order[first : first + cfg.batch_size]
        # index_select copies whole rows: 3-4x faster than x[idx] on the CPU here
        inputs = augment(torch.index_select(x, 0, idx), generator,
                         crop_padding=cfg.crop_padding, hflip=cfg.hflip, fill=fill)
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        yield inputs, torch.index_select(y, 0, idx)


def streamed_batches(x: Streamed, loader: Iterable[tuple[Tensor, Tensor]], cfg: TrainConfig,
                     generator: torch.Generator, channels_last: bool = False
                     ) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of a streamed split's batches: the loader's shuffle, augmented on the CPU as
    `cfg` says, then moved to the device."""
    for inputs, labels in x.batches(loader, n_batches_per_epoch(len(x), cfg)):  # type: ignore[arg-type]
        if cfg.crop_padding or cfg.hflip:
            inputs = augment(inputs, generator, crop_padding=cfg.crop_padding, hflip=cfg.hflip)
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        yield inputs, labels


def fit(
    model: nn.Module,
    x_train: Tensor | Streamed,
    y_train: Tensor | None,
    x_val: Tensor | Streamed,
    y_val: Tensor | None,
    cfg: TrainConfig,
    on_epoch: Callable[[EpochResult], None] | None = None,
    *,
    start: TrainState | None = None,
    on_checkpoint: Callable[[TrainState], None] | None = None,
    checkpoint_every_s: float = 0.0,
    n_epochs: int | None = None,
    loss: str = DEFAULT_LOSS,
    metric: str = DEFAULT_METRIC,
    plain: bool = False,
) -> FitResult:
    """Train `model` for `cfg.max_epochs` epochs on tensors already on one device.

    x_*: (N, C, H, W) float, y_*: (N,) int64 class indices (or (N, K) float regression
    targets); or a `Streamed` split with y None, read by a DataLoader each epoch. The model is
    moved to the data's device. Each epoch shuffles with a generator seeded from `cfg.seed` (a
    different order per epoch, the same sequence per run), keeps the last partial batch and
    stops after `cfg.max_batches_per_epoch` batches if set; validation uses the first
    `cfg.val_subset` examples if set. torch's global RNG is seeded too, so dropout repeats and
    two runs of one config on CPU match exactly. Raises `Diverged` when an epoch's mean loss is
    NaN or infinite. `on_epoch` runs after each epoch's evaluation; whatever it raises stops
    training and propagates unchanged. `on_checkpoint`, if given, receives the state after an
    epoch (after `on_epoch`; tensors on the CPU) once `checkpoint_every_s` seconds have passed
    since the last one (0: after every epoch; never after the last epoch, which ends the fit),
    and `start` continues from such a state: epochs it holds are not trained again. `n_epochs`
    stops after that many of the `cfg.max_epochs` epochs, whose length the LR schedule keeps:
    the model a trial had after `n_epochs`. `loss` and `metric` name what it trains
    with and what each epoch's `value` is (`_losses`); the best epoch is the first
    with the highest value, or the lowest for a metric that is minimised. `plain` trains
    on torch as documented (autograd, `model(x)`, `optimizer.step()`), without the
    hand-written steps some built-in models get: a user's model always is.
    """
    run = _Run.prepare(model, x_train, y_train, x_val, y_val, cfg, loss, metric, plain)
    epochs = restore(start, model, run.optimizer, run.scheduler, run.shuffle) if start else []
    last_epoch = cfg.max_epochs if n_epochs is None else min(n_epochs, cfg.max_epochs)
    last_checkpoint_s = time.monotonic()
    model.train()  # evaluate() puts the mode back after each epoch's validation
    for epoch in range(len(epochs) + 1, last_epoch + 1):
        lr = run.optimizer.param_groups[0]["lr"]
        # the queue is empty here (evaluate ended with .item()), and the .item() below waits
        # for this epoch's kernels, so wall time is training time on GPU too
        start_s = time.perf_counter()
        loss_sum = torch.zeros((), device=run.device)
        for inputs, labels in run.batches():
            if run.written_out is not None:  # a speed-up's whole step: grads left in p.grad
                batch_loss = run.written_out(inputs, labels)
            else:
                with autocast(run.device, cfg):
                    batch_loss = run.compute_loss(run.forward(inputs), labels,
                                                  cfg.label_smoothing)
                run.optimizer.zero_grad(set_to_none=True)
                batch_loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip, foreach=True)
            run.optimizer_step()
            if run.per_batch:
                run.scheduler.step()
            loss_sum += batch_loss.detach()
        train_loss = (loss_sum / run.n_batches).item()
        seconds = time.perf_counter() - start_s
        if not math.isfinite(train_loss):
            raise Diverged(f"loss became {train_loss} in epoch {epoch} "
                           f"(lr={cfg.lr:g}, optimizer={cfg.optimizer})")
        if run.per_epoch:
            run.scheduler.step()
        val_start_s = time.perf_counter()
        result = EpochResult(epoch, train_loss, run.validate(), lr, seconds,
                             time.perf_counter() - val_start_s)
        epochs.append(result)
        if on_epoch is not None:
            on_epoch(result)  # report, prune (raises), ...
        if (on_checkpoint is not None and epoch < last_epoch
                and time.monotonic() - last_checkpoint_s >= checkpoint_every_s):
            on_checkpoint(capture(epochs, model, run.optimizer, run.scheduler, run.shuffle))
            last_checkpoint_s = time.monotonic()
    pick = max if METRICS[metric].maximize else min  # both keep the first of equals
    best = pick(epochs, key=lambda e: e.value)
    return FitResult(epochs=epochs, best_epoch=best.epoch, best_value=best.value,
                     train_time_s=sum(e.seconds for e in epochs))


@dataclass
class _Run:
    """What `fit`'s loop works with: the optimizer, the schedule, how a batch goes forward
    and how the epoch's batches and the validation value come."""

    device: torch.device
    optimizer: Optimizer
    optimizer_step: Callable[[], object]
    scheduler: LRScheduler
    per_batch: bool  # the schedule steps after every batch
    per_epoch: bool  # ... or after every epoch
    written_out: WrittenStep | None
    forward: Callable[[Tensor], Tensor]
    compute_loss: Callable[[Tensor, Tensor, float], Tensor]
    shuffle: torch.Generator
    n_batches: int
    batches: Callable[[], Iterator[tuple[Tensor, Tensor]]]  # one epoch's
    validate: Callable[[], float]

    @classmethod
    def prepare(cls, model: nn.Module, x_train: Tensor | Streamed, y_train: Tensor | None,
                x_val: Tensor | Streamed, y_val: Tensor | None, cfg: TrainConfig, loss: str,
                metric: str, plain: bool) -> _Run:
        streamed = isinstance(x_train, Streamed)
        if len(x_train) == 0 or (not streamed and len(x_train) != len(y_train)):  # type: ignore[arg-type]
            raise ValueError(
                f"x_train and y_train must be non-empty and equally long, got "
                f"{len(x_train)=}, {None if y_train is None else len(y_train)=}")
        device = x_train.device
        if _speedup is not None:
            _speedup.prepare()
        # the speed-ups' optimizer steps take one learning rate for the whole model
        fast = None if plain or cfg.head_lr_multiplier != 1.0 else _speedup
        rng.seed(cfg.seed, device)
        model.to(device)
        optimizer = build_optimizer(param_groups(model, cfg), cfg)
        per_batch = cfg.schedule in PER_BATCH_SCHEDULES
        scheduler = build_scheduler(optimizer, cfg, schedule_steps_per_epoch(len(x_train), cfg))
        # a speed-up's whole step (the built-in MLP's backward written out) where it offers
        # one; else autograd through `forward`: compiled if asked, else the speed-up's or
        # the model's own
        written_out = fast.written_step(model, cfg) if fast is not None and not streamed and (
            isinstance(x_val, Tensor) and (loss, metric) == (DEFAULT_LOSS, DEFAULT_METRIC)
        ) else None
        forward: Callable[[Tensor], Tensor] = model
        if cfg.compile:
            forward = compile_model(model, cfg)
        elif fast is not None and written_out is None and cfg.precision == "fp32":
            forward = fast.forward(model, cfg) or model
        # a DataLoader shuffles with a CPU generator; tensors on the device with one there
        shuffle = torch.Generator(device="cpu" if streamed else device)
        shuffle.manual_seed(cfg.seed)
        if isinstance(x_val, Streamed):
            x_val = x_val.head(cfg.val_subset) if cfg.val_subset else x_val
        else:
            x_val, y_val = x_val[: cfg.val_subset or None], y_val[: cfg.val_subset or None]  # type: ignore[index]
        channels_last = wants_channels_last(model)
        if isinstance(x_train, Streamed):
            loader = x_train.loader(cfg.batch_size, shuffle)

            def epoch_batches() -> Iterator[tuple[Tensor, Tensor]]:
                return streamed_batches(x_train, loader, cfg, shuffle, channels_last)  # type: ignore[arg-type]
        else:
            # pad crops with the darkest value: the background of MNIST-like images
            fill = x_train.amin() if cfg.crop_padding else 0.0

            def epoch_batches() -> Iterator[tuple[Tensor, Tensor]]:
                return batches(x_train, y_train, cfg, shuffle, fill, channels_last)  # type: ignore[arg-type]

        def validate() -> float:
            if written_out is not None:
                return written_out.accuracy(x_val, y_val)  # type: ignore[arg-type]
            with autocast(device, cfg):
                return evaluate(forward, x_val, y_val, loss=loss, metric=metric)  # type: ignore[arg-type]

        return cls(
            device=device, optimizer=optimizer,
            optimizer_step=(fast.optimizer_step(optimizer) if fast else None) or optimizer.step,
            scheduler=scheduler, per_batch=per_batch,
            # a constant LR (exponential decay by 1.0) is not stepped: ~16 us an epoch saved
            per_epoch=not per_batch and not (cfg.schedule == "exponential"
                                             and cfg.decay_rate == 1.0),
            written_out=written_out, forward=forward, compute_loss=LOSSES[loss].compute,
            shuffle=shuffle, n_batches=n_batches_per_epoch(len(x_train), cfg),
            batches=epoch_batches, validate=validate)


def capture(epochs: list[EpochResult], model: nn.Module, optimizer: Optimizer,
            scheduler: LRScheduler, shuffle: torch.Generator) -> TrainState:
    """The state after the last of `epochs`, with its tensors on the CPU."""
    device = shuffle.device
    return to_host(TrainState(
        epoch=epochs[-1].epoch, model=model.state_dict(), optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(), shuffle_rng=shuffle.get_state(),
        torch_rng=torch.get_rng_state(), epochs=[e.as_dict() for e in epochs],
        cuda_rng=torch.cuda.get_rng_state(device) if device.type == "cuda" else None))


def restore(start: TrainState, model: nn.Module, optimizer: Optimizer, scheduler: LRScheduler,
            shuffle: torch.Generator) -> list[EpochResult]:
    """Put a captured state back; returns the epochs it had run."""
    model.load_state_dict(start.model)
    optimizer.load_state_dict(start.optimizer)
    scheduler.load_state_dict(start.scheduler)
    shuffle.set_state(start.shuffle_rng)
    torch.set_rng_state(start.torch_rng)
    if start.cuda_rng is not None and shuffle.device.type == "cuda":
        torch.cuda.set_rng_state(start.cuda_rng, shuffle.device)
    return [EpochResult(**e) for e in start.epochs]


def to_host(state: TrainState) -> TrainState:
    """The state with every GPU tensor copied to the CPU: all copies queued without waiting,
    then one synchronisation, instead of one stall per tensor. CPU tensors are kept as they
    are (the caller copies what it keeps: they are the live parameters)."""
    copied = False

    def copy(value: Any) -> Any:
        nonlocal copied
        if isinstance(value, Tensor) and value.device.type != "cpu":
            copied = True
            return value.to("cpu", non_blocking=True)
        if isinstance(value, dict):
            return {k: copy(v) for k, v in value.items()}
        if isinstance(value, list):
            return [copy(v) for v in value]
        return value

    host = {f.name: copy(getattr(state, f.name)) for f in dataclasses.fields(state)}
    if copied:
        torch.cuda.synchronize()  # non-blocking device-to-host copies must land before use
    return TrainState(**host)
