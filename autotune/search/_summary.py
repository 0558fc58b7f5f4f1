"""Plain-text lines about trials and studies: one per finished trial, and the final summary."""

from __future__ import annotations

from collections import Counter
from typing import Any

import optuna

from autotune.search._study import METRIC_NAME, MLFLOW_ATTR, TENSORBOARD_ATTR, metric_name
from autotune.storage._storage import mask

KEY_PARAMS = 4  # params shown on a trial's log line; the summary shows them all


def format_value(value: Any) -> str:
    """Numbers short enough to scan: 4 significant digits for floats."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_params(params: dict[str, Any], limit: int | None = None) -> str:
    items = list(params.items())[:limit]
    return " ".join(f"{k}={format_value(v)}" for k, v in items)


def trial_line(trial: optuna.trial.FrozenTrial, max_epochs: int, metric: str = METRIC_NAME
               ) -> str:
    """One line per finished trial: number, state, value, epochs, seconds, key params."""
    state = trial.state.name
    attrs = trial.user_attrs
    if trial.state == optuna.trial.TrialState.FAIL:
        value = attrs.get("fail_reason", "raised an error")
    elif trial.state == optuna.trial.TrialState.PRUNED and trial.intermediate_values:
        value = f"last {metric}={list(trial.intermediate_values.values())[-1]:.4f}"
    elif trial.value is not None:
        value = f"{metric}={trial.value:.4f}"
    else:
        value = "no value"
    seconds = attrs.get("wall_time_s")
    cost = f"epochs={attrs.get('epochs_run', 0)}/{max_epochs}" + (
        f" {seconds:.1f}s" if seconds is not None else "")
    return (f"trial {trial.number:>3} {state:<8} {value} {cost} "
            f"{format_params(trial.params, KEY_PARAMS)}")


def state_counts(study: optuna.Study) -> Counter[str]:
    return Counter(t.state.name.lower() for t in study.get_trials(deepcopy=False))


def summary_lines(study: optuna.Study, storage_url: str, test: dict[str, Any] | None
                  ) -> list[str]:
    """The final report of a run: counts, best trial and params, test accuracy, where stored."""
    counts = state_counts(study)
    finished = counts["complete"] + counts["pruned"]
    surplus = sum(1 for t in study.get_trials(deepcopy=False)
                  if str(t.user_attrs.get("fail_reason", "")).startswith("surplus"))
    failed = f"{counts['fail']} failed" + (f" ({surplus} surplus, not run)" if surplus else "")
    lines = [f"study {study.study_name}: {finished} finished trials "
             f"({counts['complete']} complete, {counts['pruned']} pruned), "
             f"{failed}, {counts['running']} running"]
    complete = [t for t in study.get_trials(deepcopy=False)
                if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        epoch = best.user_attrs.get("best_epoch")
        lines.append(f"best trial: #{best.number} {metric_name(study)}={best.value:.4f}"
                     + (f" (epoch {epoch})" if epoch is not None else ""))
        lines.append("best params: " + (format_params(best.params) or
                                        "none searched (every setting is fixed)"))
    else:
        lines.append("best trial: none yet (no trial has completed)")
    if test:
        metric = test.get("metric", METRIC_NAME)
        how = (f"(trial #{test['trial']} retrained {test['epochs']} epochs on "
               f"{test.get('train_on', 'train')}, evaluated once on {test['n_test']} "
               "test examples)")
        if metric != METRIC_NAME and test.get("test_value") is not None:
            # a regression has no accuracy: its metric's line says how it was measured
            lines.append(f"test {metric.removeprefix('val_')} of best configuration: "
                         f"{test['test_value']:.4f}" + ("" if "test_accuracy" in test
                                                        else f" {how}"))
        if "test_accuracy" in test:
            lines.append(f"test accuracy of best configuration: {test['test_accuracy']:.4f} "
                         + how)
    lines += tracking_lines(study)
    lines.append(f"storage: {storage_url}")
    return lines


def tracking_lines(study: optuna.Study) -> list[str]:
    """Where the study's trials are also watched: its TensorBoard folder, its MLflow run."""
    lines = []
    tensorboard = study.user_attrs.get(TENSORBOARD_ATTR)
    if tensorboard:
        lines.append(f"tensorboard: tensorboard --logdir {tensorboard}")
    mlflow = study.user_attrs.get(MLFLOW_ATTR)
    if isinstance(mlflow, dict):
        lines.append(f"mlflow: parent run {mlflow.get('parent_run_id')} (experiment "
                     f"{mlflow.get('experiment_id')}) in {mask(str(mlflow.get('uri')))}")
    return lines
