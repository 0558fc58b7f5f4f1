"""Create or resume a study: store its definition at creation, refuse a resume that differs."""

from __future__ import annotations

import datetime as dt
import json
import platform
import socket
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import optuna

from autotune.errors import DefinitionMismatch
from autotune.search import _samplers as samplers
from autotune.spec._spec import StudySpec

METRIC_NAME = "val_accuracy"  # the default metric (autotune.training._losses.DEFAULT_METRIC)
DEFINITION_ATTR = "autotune:definition"  # JSON-able dict: StudySpec.definition()
DATA_SOURCE_ATTR = "autotune:data_source"
SPEC_TEXT_ATTR = "autotune:spec_text"  # the study file, verbatim
PROVENANCE_ATTR = "autotune:provenance"  # versions, git commit, host, creation time
TEST_RESULT_ATTR = "autotune:test_result"
ARTIFACT_DIR_ATTR = "autotune:artifact_dir"  # where checkpoints, curves and weights live
TENSORBOARD_ATTR = "autotune:tensorboard"  # the study's folder of TensorBoard event files
MLFLOW_ATTR = "autotune:mlflow"  # {"uri", "experiment_id", "parent_run_id"} of its MLflow runs
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def find_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study | None:
    """The stored study of that name, or None; loads no sampler state."""
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def check_definition(study: optuna.Study, spec: StudySpec, *, allow_changes: bool) -> list[str]:
    """Compare a stored study with this run's spec; returns the differences it allowed."""
    stored = study.user_attrs.get(DEFINITION_ATTR)
    if stored is None:
        raise DefinitionMismatch(
            f"study '{study.study_name}' exists in this storage but was not created by autotune;"
            " pick another name with --study-name")
    diffs = diff_definitions(stored, _jsonable(spec.definition()))
    if diffs and not allow_changes:
        raise DefinitionMismatch(
            f"study '{study.study_name}' was created with a different definition: "
            f"{'; '.join(diffs)}. Resume with the original settings, start a new study with "
            "--study-name NAME, or pass --allow-changes to continue anyway")
    return diffs


def check_data_source(study: optuna.Study, source: str, *, allow_changes: bool) -> str | None:
    """Refuse to resume on other data than the study started with; returns an allowed diff."""
    stored = study.user_attrs.get(DATA_SOURCE_ATTR)
    if stored is None or stored == source:
        return None
    diff = f"data source: stored {stored!r}, now {source!r}"
    if not allow_changes:
        raise DefinitionMismatch(
            f"study '{study.study_name}' was run on other data ({diff}); scores would not be "
            "comparable. Point --data-dir at the original data, start a new study with "
            "--study-name NAME, or pass --allow-changes to continue anyway")
    return diff


def diff_definitions(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between two definitions, one per changed leaf key."""
    old, new = _flatten(stored), _flatten(current)
    return [f"{key}: stored {_short(old.get(key))}, now {_short(new.get(key))}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"space": {"lr": {"low": 1}}} -> {"space.lr.low": 1}; empty tables vanish."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def create_study(storage: optuna.storages.BaseStorage, spec: StudySpec, *, data_source: str,
                 sampler_seed: int, artifact_dir: str) -> optuna.Study:
    """Create a new study and store everything needed to rebuild its search elsewhere."""
    study = optuna.create_study(
        study_name=spec.name, storage=storage,
        direction=optuna.study.StudyDirection[spec.direction.upper()],
        sampler=samplers.build_sampler(spec.sampler, spec.sampler_options, sampler_seed),
        pruner=samplers.build_pruner(spec.pruner, spec.pruner_options, spec.max_epochs))
    with warnings.catch_warnings():  # experimental since 3.2, stable in practice
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([spec.metric])
    study.set_user_attr(DEFINITION_ATTR, _jsonable(spec.definition()))
    study.set_user_attr(DATA_SOURCE_ATTR, data_source)
    study.set_user_attr(SPEC_TEXT_ATTR, spec.text)
    study.set_user_attr(PROVENANCE_ATTR, provenance(spec))
    study.set_user_attr(ARTIFACT_DIR_ATTR, artifact_dir)
    for params in spec.start_from:  # known-good starting points, tried before sampling
        study.enqueue_trial(params, skip_if_exists=True)
    return study


def resume_study(storage: optuna.storages.BaseStorage, spec: StudySpec, *, sampler_seed: int
                 ) -> optuna.Study:
    """Load a stored study with this run's sampler and pruner attached."""
    return optuna.load_study(
        study_name=spec.name, storage=storage,
        sampler=samplers.build_sampler(spec.sampler, spec.sampler_options, sampler_seed),
        pruner=samplers.build_pruner(spec.pruner, spec.pruner_options, spec.max_epochs))


def metric_name(study: optuna.Study) -> str:
    """The name of the study's objective value as stored on it (`set_metric_names`), or
    "value" for a study made outside autotune without one."""
    names = study.metric_names
    return names[0] if names else "value"


def count_finished(study: optuna.Study) -> int:
    """Study-wide count of complete + pruned trials: what --n-trials is a total of."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def provenance(spec: StudySpec) -> dict[str, Any]:
    """Where and with what this study was created."""
    versions: dict[str, str | None] = {}
    for package in ("autotune", "torch", "torchvision", "optuna", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "versions": versions,
        "git_commit": git_commit(),
        "spec_path": str(Path(spec.path).resolve()) if spec.path else spec.path,
        "command": sys.argv,
    }


def git_commit() -> str | None:
    """The commit of the autotune checkout, with '+dirty' for local changes; None outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty.strip() else "")


def _jsonable(value: Any) -> Any:
    """The value as it reads back from storage (tuples become lists, etc.)."""
    return json.loads(json.dumps(value))


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if value is not None else "(absent)"
    return text if len(text) <= 120 else text[:117] + "..."
