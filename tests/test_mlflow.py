"""--mlflow URI: a parent run per study, a child run per trial, read back with MLflow's own
`mlflow.search_runs` from a local SQLite tracking store two workers wrote to."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.test_plugins import run, run_without


def runs_of(uri: str, study: str):  # noqa: ANN201 - a pandas DataFrame
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[study])


def test_two_workers_log_a_run_per_trial_under_the_study_s_parent_run_kept_on_resume(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = run("--study", "digits", "--storage", url, "--n-trials", "4", "--max-epochs", "3",
               "--workers", "2", "--mlflow", uri, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="digits", storage=url)
    record = study.user_attrs["autotune:mlflow"]
    runs = runs_of(uri, "digits")
    parents = runs[runs["tags.mlflow.runName"] == "digits"]
    assert list(parents.run_id) == [record["parent_run_id"]]
    children = runs[runs["tags.mlflow.parentRunId"] == record["parent_run_id"]]
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert sorted(children["tags.autotune.trial"].astype(int)) == [t.number for t in finished]
    client = MlflowClient(uri)
    for trial in finished:
        child = children[children["tags.autotune.trial"] == str(trial.number)].iloc[0]
        assert child["tags.autotune.state"] == trial.state.name.lower()
        assert child["status"] == ("FINISHED" if trial.state.name == "COMPLETE" else "KILLED")
        assert float(child["params.lr"]) == pytest.approx(trial.params["lr"])
        history = client.get_metric_history(child.run_id, "val_accuracy")
        assert {m.step: m.value for m in history} == pytest.approx(trial.intermediate_values)
        if trial.state.name == "PRUNED":
            assert child["tags.autotune.reason"] == trial.user_attrs["prune_reason"]
    best = study.best_trial
    assert parents.iloc[0]["tags.autotune.best_trial"] == str(best.number)
    artifacts = [a.path for a in client.list_artifacts(record["parent_run_id"])]
    assert artifacts == [f"trial-{best.number}-weights.safetensors"]
    # beside the tracking database, not in ./mlruns of the folder the run started in
    stored = tmp_path / "mlartifacts" / "digits" / record["parent_run_id"] / "artifacts"
    assert (stored / artifacts[0]).is_file()
    assert not (tmp_path / "mlruns").exists()

    resumed = run("--study", "digits", "--storage", url, "--n-trials", "6", "--max-epochs",
                  "3", "--mlflow", uri, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    runs = runs_of(uri, "digits")
    assert list(runs[runs["tags.mlflow.runName"] == "digits"].run_id) == [
        record["parent_run_id"]]  # the same parent
    assert (runs["tags.mlflow.parentRunId"] == record["parent_run_id"]).sum() == 6
    assert f"mlflow: parent run {record['parent_run_id']} (experiment " in resumed.stdout
    reported = subprocess.run([sys.executable, "-m", "autotune.report", "--study", "digits",
                               "--storage", url, "--out", str(tmp_path / "report"),
                               "--format", "json"], capture_output=True, text=True,
                              timeout=120)
    assert reported.returncode == 0, reported.stderr
    assert f"mlflow: parent run {record['parent_run_id']}" in reported.stdout
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["mlflow"]["parent_run_id"] == record["parent_run_id"]
    note = optuna_dashboard_note(study)
    assert f"MLflow: parent run `{record['parent_run_id']}`" in note


def optuna_dashboard_note(study: optuna.Study) -> str:
    """The study note autotune wrote for optuna-dashboard, as the dashboard reads it."""
    from optuna_dashboard._note import get_note_from_system_attrs

    attrs = study._storage.get_study_system_attrs(study._study_id)
    return str(get_note_from_system_attrs(attrs, None)["body"])


def test_without_mlflow_installed_the_flag_is_refused_in_one_line(tmp_path):
    done = run_without("mlflow", "--study", "digits", "--storage",
                       f"sqlite:///{tmp_path / 'n.db'}", "--mlflow",
                       f"sqlite:///{tmp_path / 'm.db'}", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: --mlflow needs MLflow: pip install "
                                   "'autotune[mlflow]' (or pip install mlflow)")
    assert not (tmp_path / "n.db").exists()
