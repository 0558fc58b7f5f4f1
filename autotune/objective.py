"""The objective: trial -> space.suggest() -> TrainConfig -> train.fit(on_epoch=report/prune)."""

from __future__ import annotations

import time

import optuna
import torch

from autotune import space
from autotune.data import Splits
from autotune.errors import Diverged
from autotune.models import build_model, count_parameters
from autotune.spec import StudySpec
from autotune.train import EpochResult, fit


class Objective:
    """Trains one model per trial on the train split and returns its best val accuracy."""

    def __init__(self, spec: StudySpec, splits: Splits, device: torch.device) -> None:
        self.spec = spec
        self.splits = splits
        self.device = device

    def __call__(self, trial: optuna.Trial) -> float:
        seed = trial_seed(self.spec, trial.number)
        cfg = space.suggest(trial, self.spec, seed=seed)
        model = build_model(cfg, self.splits.input_shape, self.splits.n_classes).to(self.device)
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("n_parameters", count_parameters(model))
        trial.set_user_attr("device", str(self.device))
        epochs: list[EpochResult] = []

        def on_epoch(result: EpochResult) -> None:
            epochs.append(result)
            trial.report(result.val_accuracy, result.epoch)
            if trial.should_prune():
                best = max(r.val_accuracy for r in epochs)
                reason = (f"pruned by {self.spec.pruner} at epoch {result.epoch}: val accuracy "
                          f"{result.val_accuracy:.4f} (best so far {best:.4f})")
                trial.set_user_attr("prune_reason", reason)
                raise optuna.TrialPruned(reason)

        started = time.perf_counter()
        try:
            result = fit(model, self.splits.x_train, self.splits.y_train, self.splits.x_val,
                         self.splits.y_val, cfg, on_epoch)
        except Diverged as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise
        finally:
            record_epochs(trial, epochs, time.perf_counter() - started)
        trial.set_user_attr("best_epoch", result.best_epoch)
        return result.best_val_accuracy


def trial_seed(spec: StudySpec, trial_number: int) -> int:
    """The torch seed of a trial: distinct per trial, reproducible from the study seed."""
    return spec.seed * 100_003 + trial_number


def record_epochs(trial: optuna.Trial, epochs: list[EpochResult], wall_s: float) -> None:
    """Store what a trial cost, whatever way it ended."""
    train_s = sum(r.seconds for r in epochs)
    trial.set_user_attr("epochs_run", len(epochs))
    trial.set_user_attr("train_time_s", round(train_s, 3))
    trial.set_user_attr("seconds_per_epoch", round(train_s / len(epochs), 4) if epochs else None)
    trial.set_user_attr("wall_time_s", round(wall_s, 3))
