"""After the search: retrain the best trial's configuration and evaluate it once on test."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore

from autotune.plugins import _references as plugins
from autotune.search._study import TEST_RESULT_ATTR
from autotune.spec import _space as space
from autotune.spec._spec import StudySpec
from autotune.training import _artifacts as artifacts
from autotune.training import _streams as streams
from autotune.training._data import Splits
from autotune.training._fit import evaluate, fit
from autotune.training._losses import task
from autotune.training._models import build_for


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best complete trial, or None while no trial has completed."""
    try:
        return study.best_trial
    except ValueError:
        return None


def evaluate_best(study: optuna.Study, spec: StudySpec, splits: Splits, device: torch.device,
                  store: FileSystemArtifactStore | None = None) -> dict[str, Any] | None:
    """Test accuracy of the best configuration, computed once per best trial and stored.

    The configuration is retrained with the trial's own seed for its best epoch count, on
    what `spec.final_train` names: "train" reproduces the model the trial validated (the LR
    schedule still spans the trial's max_epochs); "train+val" adds the validation split, so
    the retrained model's validation score means nothing and only the search's is kept.
    Then the test split is seen exactly once. The result (both scores) is stored on the
    study; with a `store`, the final weights are uploaded to it as a study artifact.
    """
    best = best_trial(study)
    if best is None or splits.x_test is None:
        return None  # nothing finished yet, or a user's data without a test split
    stored = study.user_attrs.get(TEST_RESULT_ATTR)
    if stored and stored.get("trial") == best.number and \
            stored.get("train_on", "train") == spec.final_train:
        return stored
    epochs = int(best.user_attrs.get("best_epoch", spec.max_epochs))
    cfg = space.to_config(spec, best.params, seed=int(best.user_attrs["seed"]))
    x_train, y_train = splits.x_train, splits.y_train
    if spec.final_train == "train+val":
        x_train, y_train = streams.concat(x_train, y_train, splits.x_val, splits.y_val)
    model = build_for(spec.model, Path(spec.path).parent, cfg,
                      space.model_params(spec, best.params), splits.input_shape,
                      splits.n_outputs).to(device)
    fitted = fit(model, x_train, y_train, splits.x_val, splits.y_val, cfg, n_epochs=epochs,
                 loss=spec.loss, metric=spec.metric,
                 plain=not plugins.is_builtin_model(spec.model) and not spec.speedups)
    result = {
        "trial": best.number,
        "metric": spec.metric,
        # the study's metric on the test split (test_loss for val_loss, ...)
        "test_value": round(evaluate(model, splits.x_test, splits.y_test, loss=spec.loss,
                                     metric=spec.metric), 6),
        "val_accuracy_search": best.value,  # the study's metric, whatever its name
        "val_accuracy_retrained": (round(fitted.epochs[-1].value, 6)
                                   if spec.final_train == "train" else None),
        "train_on": spec.final_train,
        "n_train": len(x_train),
        "epochs": epochs,
        "train_time_s": round(fitted.train_time_s, 3),
        "n_test": len(splits.x_test),
        "config": dataclasses.asdict(cfg),
    }
    if task(spec.loss) == "classification":
        result["test_accuracy"] = round(evaluate(model, splits.x_test, splits.y_test), 6)
    if store is not None:
        result["weights_artifact_id"] = artifacts.upload_study_weights(
            store, study, model.state_dict())
    study.set_user_attr(TEST_RESULT_ATTR, result)
    return result
