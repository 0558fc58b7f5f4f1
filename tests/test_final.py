from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest
import safetensors.torch
import torch

from autotune.search._final import evaluate_best
from autotune.search._objective import Objective
from autotune.search._study import TEST_RESULT_ATTR
from autotune.spec._spec import load_spec
from autotune.training import _artifacts as artifacts
from autotune.training._data import load_splits
from autotune.training._models import build_model
from tests.conftest import write_study

# Per-batch cosine schedule: retraining for the best epoch count must keep the trial's
# schedule over max_epochs to reproduce the validated model.
STUDY = """
dataset = "digits"
model = "mlp"
seed = 3
val_fraction = 0.2
final_train = "{final_train}"
[budget]
n_trials = 2
max_epochs = 4
[pruner]
name = "none"
[fixed]
width = 32
depth = 1
optimizer = "adam"
schedule = "cosine"
[space]
lr = {{ low = 1e-3, high = 3e-2, log = true }}
"""


def searched(tmp_path: Path, final_train: str):  # type: ignore[no-untyped-def]
    """A real two-trial study on digits, its spec, splits and artifact store."""
    spec = load_spec(str(write_study(tmp_path, STUDY.format(final_train=final_train))))
    splits = load_splits("digits", data_dir=tmp_path, val_fraction=spec.val_fraction,
                         split_seed=spec.split_seed)
    store = artifacts.open_store(tmp_path / "artifacts")
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(Objective(spec, splits, torch.device("cpu"), store), n_trials=2)
    return study, spec, splits, store


def test_final_retrain_on_train_and_val_stores_both_scores_and_uploads_the_weights(
        tmp_path: Path) -> None:
    study, spec, splits, store = searched(tmp_path, "train+val")
    result = evaluate_best(study, spec, splits, torch.device("cpu"), store=store)
    assert result is not None
    best = study.best_trial
    assert result["n_train"] == len(splits.y_train) + len(splits.y_val)
    assert result["train_on"] == "train+val" and result["trial"] == best.number
    assert result["val_accuracy_search"] == best.value
    assert result["val_accuracy_retrained"] is None  # it trained on the validation images
    assert 0.8 < result["test_accuracy"] <= 1.0 and result["n_test"] == len(splits.y_test)
    assert result["epochs"] == best.user_attrs["best_epoch"]
    assert study.user_attrs[TEST_RESULT_ATTR] == result

    (meta,) = optuna.artifacts.get_all_artifact_meta(study)
    assert meta.filename == artifacts.FINAL_WEIGHTS
    assert meta.artifact_id == result["weights_artifact_id"]
    path = tmp_path / "final.safetensors"
    optuna.artifacts.download_artifact(artifact_store=store, file_path=str(path),
                                       artifact_id=meta.artifact_id)
    model = build_model(study_config(result), splits.input_shape, splits.n_outputs)
    model.load_state_dict(safetensors.torch.load_file(str(path)))
    with torch.no_grad():
        correct = (model.eval()(splits.x_test).argmax(1) == splits.y_test).float().mean().item()
    assert correct == pytest.approx(result["test_accuracy"], abs=1e-6)


def test_final_retrain_on_train_reproduces_the_validated_model(tmp_path: Path) -> None:
    study, spec, splits, _ = searched(tmp_path, "train")
    result = evaluate_best(study, spec, splits, torch.device("cpu"))
    assert result is not None
    assert result["n_train"] == len(splits.y_train) and result["train_on"] == "train"
    assert result["val_accuracy_retrained"] == pytest.approx(result["val_accuracy_search"])
    assert "weights_artifact_id" not in result  # no store given


def test_final_result_is_reused_for_the_same_trial_and_split_only(tmp_path: Path) -> None:
    study, spec, splits, _ = searched(tmp_path, "train")
    first = evaluate_best(study, spec, splits, torch.device("cpu"))
    again = evaluate_best(study, spec, splits, torch.device("cpu"))
    assert again == first
    other = evaluate_best(study, dataclasses.replace(spec, final_train="train+val"), splits,
                          torch.device("cpu"))
    assert other is not None and other["train_on"] == "train+val"


def study_config(result):  # type: ignore[no-untyped-def]
    from autotune.spec._config import TrainConfig

    return TrainConfig(**result["config"])
