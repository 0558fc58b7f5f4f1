"""Markdown notes shown on a study's page in optuna-dashboard: the best trial at a glance."""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from autotune.search._study import (
    DATA_SOURCE_ATTR,
    DEFINITION_ATTR,
    MLFLOW_ATTR,
    TENSORBOARD_ATTR,
    TEST_RESULT_ATTR,
    metric_name,
)
from autotune.search._summary import format_value, state_counts
from autotune.storage._storage import mask


def write_study_note(study: optuna.Study) -> None:
    """Replace the study's dashboard note with a summary of its best trial."""
    _dashboard_save_note()(study, study_note(study))


@functools.cache
def _dashboard_save_note() -> Callable[[optuna.Study, str], None]:
    """`optuna_dashboard.save_note`, read from its own module `optuna_dashboard/_note.py`.

    Importing the package runs its `__init__`, which imports the whole web app and, through
    it, scikit-learn: 1.5-2.3 s at the end of every run here, for a function that needs only
    optuna. Its module is loaded on its own instead; should the package's layout change, the
    plain import is used.
    """
    package = importlib.util.find_spec("optuna_dashboard")
    path = Path(package.origin).parent / "_note.py" if package and package.origin else None
    if path is not None and path.is_file():
        spec = importlib.util.spec_from_file_location("optuna_dashboard._note", path)
        if spec is not None and spec.loader is not None:
            module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
                return module.save_note  # type: ignore[no-any-return]
            except (ImportError, AttributeError):
                pass
    from optuna_dashboard import save_note

    return save_note  # type: ignore[no-any-return]


def study_note(study: optuna.Study) -> str:
    """The note's Markdown: best value and params, test accuracy, counts, definition."""
    counts = state_counts(study)
    finished = counts["complete"] + counts["pruned"]
    lines = [f"## {study.study_name}", ""]
    best = _best_trial(study)
    if best is None:
        lines.append("No trial has completed yet.")
    else:
        attrs = best.user_attrs
        lines += [f"**Best trial: #{best.number}**, {metric_name(study)} = **{best.value:.4f}** "
                  f"(epoch {attrs.get('best_epoch', '?')} of {attrs.get('epochs_run', '?')}, "
                  f"seed {attrs.get('seed', '?')}, {_seconds(attrs.get('train_time_s'))} "
                  "of training)", ""]
        test = study.user_attrs.get(TEST_RESULT_ATTR)
        if test and test.get("trial") == best.number:
            on = (f" on {test['train_on']} ({test['n_train']} examples)"
                  if "train_on" in test else "")
            if "test_accuracy" in test:
                shown = f"Test accuracy: {test['test_accuracy']:.4f}"
            else:  # a regression: the study's own metric on the test split
                name = str(test.get("metric", "val_loss")).removeprefix("val_")
                shown = f"Test {name}: {test['test_value']:.4f}"
            lines += [f"**{shown}** (configuration retrained "
                      f"{test['epochs']} epochs{on}, evaluated once on {test['n_test']} test "
                      "examples)", ""]
        else:
            lines += ["Test result: not evaluated yet for this trial.", ""]
        lines += ["| param | value |", "|---|---|"]
        lines += [f"| {name} | {format_value(value)} |" for name, value in best.params.items()]
        lines.append("")
    lines.append(f"Trials: {finished} finished ({counts['complete']} complete, "
                 f"{counts['pruned']} pruned), {counts['fail']} failed, "
                 f"{counts['running']} running.")
    definition: dict[str, Any] = study.user_attrs.get(DEFINITION_ATTR) or {}
    if definition:
        lines += ["", f"Data: {definition.get('dataset')} "
                      f"({study.user_attrs.get(DATA_SOURCE_ATTR, '?')}), model "
                      f"{definition.get('model')}, sampler {definition.get('sampler')}, "
                      f"pruner {definition.get('pruner')}, up to "
                      f"{definition.get('max_epochs')} epochs per trial."]
    tensorboard = study.user_attrs.get(TENSORBOARD_ATTR)
    if tensorboard:
        lines += ["", f"TensorBoard: `tensorboard --logdir {tensorboard}` (a folder per "
                      "trial)."]
    mlflow = study.user_attrs.get(MLFLOW_ATTR)
    if isinstance(mlflow, dict):
        lines += ["", f"MLflow: parent run `{mlflow.get('parent_run_id')}` in experiment "
                      f"{mlflow.get('experiment_id')} at `{mask(str(mlflow.get('uri')))}` "
                      "(a child run per trial)."]
    lines += ["", "_Written by autotune after the search; the next run replaces it._"]
    return "\n".join(lines) + "\n"


def _best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial
        return None


def _seconds(value: object) -> str:
    return f"{value:.1f} s" if isinstance(value, (int, float)) else "? s"
