"""The speed-ups as the hooks `fit` and the storage consult: `FastTraining`, `FastStorage`.

Each one declines (None) wherever it has not been shown to give the plain path's results:
`fit` asks only for built-in models (a user's model is `plain`), the written-out step only
for the MLP it recognises, the batched storage only on the Optuna releases it was tested on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import optuna

from autotune import _env as env
from autotune.fast._batched import BatchedRDBStorage, batched_backend, flush_trial

if TYPE_CHECKING:  # torch loads when a trial trains, not when the plugin is installed
    from torch import Tensor, nn
    from torch.optim import Optimizer

    from autotune.fast._mlp_step import WrittenOutStep
    from autotune.spec._config import TrainConfig

FAST_STORAGE_ENV = "AUTOTUNE_FAST_STORAGE"
# Optuna (major, minor) releases whose tables and storage methods the batched storage was
# tested against (tests/test_storage.py reads its rows back through plain Optuna)
TESTED_OPTUNA = ((5, 0),)


class FastTraining:
    """`fit`'s hooks: the MLP's written-out step, faster CPU forwards, direct optimizer
    kernels; and, for every fit, malloc kept from unmapping and torch._dynamo not imported."""

    def prepare(self) -> None:
        from autotune.fast._lazy_dynamo import skip_dynamo_wrappers
        from autotune.fast._malloc import keep_freed_memory

        keep_freed_memory()
        skip_dynamo_wrappers()  # optimizer methods would import torch._dynamo (~1.4 s)

    def written_step(self, model: nn.Module, cfg: TrainConfig) -> WrittenOutStep | None:
        from autotune.fast._mlp_step import mlp_step

        return mlp_step(model, cfg)

    def forward(self, model: nn.Module, cfg: TrainConfig) -> Callable[[Tensor], Tensor] | None:
        from autotune.fast._cpu_forward import cpu_forward

        return cpu_forward(model)

    def optimizer_step(self, optimizer: Optimizer) -> Callable[[], object] | None:
        from autotune.fast._fused_step import fused_step

        return fused_step(optimizer)


def fast_storage() -> bool:
    """Whether RDB storages take the batched writes and in-memory listings (1, the default)
    or Optuna's RDBStorage as it is, with reconnects only (0): $AUTOTUNE_FAST_STORAGE."""
    return env.number(FAST_STORAGE_ENV, 1, int, lambda v: v in (0, 1), "0 or 1") == 1


def optuna_tested() -> bool:
    """Whether the installed Optuna is a release the batched storage was tested on."""
    major, minor = (int(part) for part in optuna.__version__.split(".")[:2])
    return (major, minor) in TESTED_OPTUNA


class FastStorage:
    """The storage hooks: Optuna's tables written in batches (`_batched`), where enabled and
    the Optuna release is one it was tested on; plain RDBStorage otherwise."""

    def rdb_class(self) -> type[BatchedRDBStorage] | None:
        return BatchedRDBStorage if fast_storage() and optuna_tested() else None

    def flush(self, trial: optuna.Trial) -> None:
        flush_trial(trial)

    def claim_counter(self, study: optuna.Study) -> _Claims | None:
        backend = batched_backend(study._storage)
        return None if backend is None else _Claims(backend)


class _Claims:
    """The batched storage's counts of claimed trials, asked by study and trial."""

    def __init__(self, backend: BatchedRDBStorage):
        self.backend = backend

    def count_claimed(self, study: optuna.Study, before: int | None) -> int:
        return self.backend.count_claimed(study._study_id, before)

    def claimed_at_creation(self, trial: optuna.Trial) -> int | None:
        return self.backend.claimed_at_creation(trial._trial_id)

    def claimed_at_finish(self, trial: optuna.trial.FrozenTrial) -> int | None:
        return self.backend.claimed_at_finish(trial._trial_id)


def environment_ok() -> None:
    """Read the layer's $AUTOTUNE_... settings now: UsageError (one line) for a bad one."""
    from autotune.fast._batched import flush_every_s_from_env
    from autotune.fast._listing import list_every_s

    list_every_s()
    flush_every_s_from_env()
    fast_storage()
