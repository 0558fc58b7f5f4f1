"""After the search: retrain the best trial's configuration and evaluate it once on test."""

from __future__ import annotations

import dataclasses
from typing import Any

import optuna
import torch

from autotune import space
from autotune.data import Splits
from autotune.models import build_model
from autotune.spec import StudySpec
from autotune.study import TEST_RESULT_ATTR
from autotune.train import evaluate, fit


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best complete trial, or None while no trial has completed."""
    try:
        return study.best_trial
    except ValueError:
        return None


def evaluate_best(study: optuna.Study, spec: StudySpec, splits: Splits, device: torch.device
                  ) -> dict[str, Any] | None:
    """Test accuracy of the best configuration, computed once per best trial and stored.

    The configuration is retrained on the train split with the trial's own seed for its best
    epoch count, which reproduces the model the trial validated (the schedule is per epoch),
    then the test split is seen exactly once.
    """
    best = best_trial(study)
    if best is None:
        return None
    stored = study.user_attrs.get(TEST_RESULT_ATTR)
    if stored and stored.get("trial") == best.number:
        return stored
    epochs = int(best.user_attrs.get("best_epoch", spec.max_epochs))
    cfg = space.to_config(spec, best.params, seed=int(best.user_attrs["seed"]),
                          max_epochs=epochs)
    model = build_model(cfg, splits.input_shape, splits.n_classes).to(device)
    fitted = fit(model, splits.x_train, splits.y_train, splits.x_val, splits.y_val, cfg)
    result = {
        "trial": best.number,
        "test_accuracy": round(evaluate(model, splits.x_test, splits.y_test), 6),
        "val_accuracy_search": best.value,
        "val_accuracy_retrained": round(fitted.epochs[-1].val_accuracy, 6),
        "epochs": epochs,
        "n_test": int(splits.y_test.shape[0]),
        "config": dataclasses.asdict(cfg),
    }
    study.set_user_attr(TEST_RESULT_ATTR, result)
    return result
