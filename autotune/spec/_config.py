"""TrainConfig: everything one training run needs, named as in study files and Optuna params."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from autotune.plugins import _references as plugins

DATASETS = tuple(plugins.DATASETS)  # the built-in ones; plugins may register more
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "nadam", "adadelta")
MODELS = tuple(plugins.MODELS)  # the built-in ones; plugins may register more
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")  # bf16 = torch.autocast(bfloat16) around forward and loss
# exponential: x decay_rate per epoch; cosine: cosine annealing to 0 over the whole run, per
# batch; onecycle: torch's OneCycleLR, per batch (warm-up to lr, then cosine down to ~0)
SCHEDULES = ("exponential", "cosine", "onecycle")
# A running trial saves its training state at most this often, at an epoch's end (a retried
# trial resumes from there): a crash costs at most this much training, and short epochs are
# not slowed by a save each. `autotune.run --checkpoint-every` / $AUTOTUNE_CHECKPOINT_EVERY_S.
CHECKPOINT_EVERY_S = 30.0
CHECKPOINT_ENV = "AUTOTUNE_CHECKPOINT_EVERY_S"


@dataclass(frozen=True)
class TrainConfig:
    """One trial's training settings. Every field may be searched or fixed by a study file."""

    # optimisation
    optimizer: str = "sgd"  # one of OPTIMIZERS
    lr: float = 0.01  # initial learning rate, > 0
    momentum: float = 0.0  # sgd and rmsprop only; [0, 1)
    nesterov: bool = False  # sgd only; used only when momentum > 0
    beta1: float = 0.9  # adam, adamw, nadam only; [0, 1)
    beta2: float = 0.999  # adam, adamw, nadam only; [0, 1)
    weight_decay: float = 0.0  # L2 penalty (decoupled for adamw); >= 0
    schedule: str = "exponential"  # LR schedule, one of SCHEDULES
    decay_rate: float = 1.0  # exponential only: LR x this each epoch; 1.0 = constant; (0, 1]
    warmup_fraction: float = 0.3  # onecycle only: share of the steps rising to lr; (0, 1)
    label_smoothing: float = 0.0  # cross-entropy target smoothing; 0 = off; [0, 1)
    grad_clip: float = 0.0  # max global L2 norm of the gradients; 0 = off; >= 0
    # the model's last nn.Linear (its head) learns at lr x this, the rest at lr: a new head
    # on a pretrained backbone often wants more; 1 = one lr for all; > 0
    head_lr_multiplier: float = 1.0
    batch_size: int = 64  # examples per step, >= 1
    max_epochs: int = 10  # epochs to train unless pruned, >= 1
    max_batches_per_epoch: int = 0  # stop each epoch after this many batches; 0 = all, >= 0
    val_subset: int = 0  # evaluate on the first N validation examples; 0 = all, >= 0
    # model shape
    model: str = "mlp"  # one of MODELS
    width: int = 128  # mlp: units per hidden layer; cnn: channels of the first conv block
    depth: int = 2  # mlp: hidden layers; cnn: conv blocks (channels double each block)
    dropout: float = 0.0  # dropout probability before each hidden/fc layer; [0, 1)
    batch_norm: bool = True  # cnn only: BatchNorm after each conv (else the conv has a bias)
    fc_units: int = 128  # cnn only: hidden units of the classifier head, >= 1
    # augmentation of training batches (autotune.training._augment), on the device
    crop_padding: int = 0  # random crop of the image padded by this many pixels; 0 = off, >= 0
    hflip: bool = False  # flip each training image left-right with probability 1/2
    # speed; neither changes what is searched, only how fast (and bf16 how precisely)
    precision: str = "fp32"  # one of PRECISIONS; bf16 pays off on GPUs (and CPUs with AMX)
    compile: bool = False  # torch.compile the model; minutes of compiling, for GPU searches
    # reproducibility
    seed: int = 0  # torch RNG seed for init and batch order

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer=}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision=}")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule=}")
        if self.model not in plugins.MODELS and ":" not in self.model:  # or a reference
            raise ValueError(f"model must be one of {', '.join(plugins.MODELS)} or "
                             f"'file.py:function', got {self.model=}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr=}")
        if not self.head_lr_multiplier > 0 or not math.isfinite(self.head_lr_multiplier):
            raise ValueError(f"head_lr_multiplier must be a finite number > 0, got "
                             f"{self.head_lr_multiplier=}")
        for name in ("momentum", "beta1", "beta2", "dropout", "label_smoothing"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {name}={value!r}")
        if not 0.0 < self.decay_rate <= 1.0:
            raise ValueError(f"decay_rate must be in (0, 1], got {self.decay_rate=}")
        if not 0.0 < self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in (0, 1), got {self.warmup_fraction=}")
        for name in ("weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not value >= 0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number >= 0, got {name}={value!r}")
        for name in ("batch_size", "max_epochs", "width", "depth", "fc_units"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {name}={getattr(self, name)!r}")
        for name in ("max_batches_per_epoch", "val_subset", "crop_padding"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {name}={getattr(self, name)!r}")


def field_types() -> dict[str, type]:
    """Map each TrainConfig field name to its Python type (bool, int, float or str)."""
    names = {"bool": bool, "int": int, "float": float, "str": str}
    return {f.name: names[str(f.type)] for f in dataclasses.fields(TrainConfig)}
