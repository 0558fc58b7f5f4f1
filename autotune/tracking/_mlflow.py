"""`--mlflow URI` (or `mlflow = "URI"` in a study file): one MLflow parent run per study and
one child run per trial, in the experiment named after the study.

A child run holds the trial's params, its metrics per epoch (the epoch as step), and as
tags its number, state and prune or fail reason; a retried trial's run names the trials it
continues (`autotune.retries`). The parent run is made once, when the study is first run
with this tracking URI, and kept on the study (`autotune:mlflow`), so a resumed study, and
every worker, logs under the same parent; after the search the best trial's weights are
logged to it as an artifact, in `mlartifacts/` beside a local `sqlite:///mlflow.db`, which
needs no server. Trials only queue what they report: one thread per process writes to
MLflow.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import optuna

from autotune.errors import UsageError
from autotune.tracking._tracker import QueuedTracker

INSTALL = "pip install 'autotune[mlflow]' (or pip install mlflow)"
STUDY_ATTR = "autotune:mlflow"  # as autotune.search._study.MLFLOW_ATTR: uri, ids of runs
STATUS = {"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}


def check_installed() -> None:
    """UsageError (exit 2, before anything is stored) when MLflow is not installed."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise UsageError(f"--mlflow needs MLflow: {INSTALL}") from None


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def parent_run(study: optuna.Study, uri: str) -> dict[str, str]:
    """The study's parent run in the tracking store at `uri`: the stored one, or a new one
    (in the experiment named after the study) stored on the study."""
    stored = study.user_attrs.get(STUDY_ATTR)
    if isinstance(stored, dict) and stored.get("uri") == uri:
        return stored
    client = _client(uri)
    experiment = client.get_experiment_by_name(study.study_name)
    experiment_id = (experiment.experiment_id if experiment is not None
                     else client.create_experiment(study.study_name,
                                                   artifact_location=artifact_root(
                                                       uri, study.study_name)))
    run = client.create_run(experiment_id, run_name=study.study_name,
                            tags={"autotune.study": study.study_name})
    record = {"uri": uri, "experiment_id": experiment_id, "parent_run_id": run.info.run_id}
    study.set_user_attr(STUDY_ATTR, record)
    return record


def artifact_root(uri: str, experiment: str) -> str | None:
    """Where a new experiment keeps its runs' files for a local SQLite tracking store: in
    `mlartifacts/` beside the database file (as `mlflow server` does), not MLflow's default
    `./mlruns` of whatever folder the run started in. None for a tracking server, which
    decides."""
    if not uri.startswith("sqlite:///"):
        return None
    database = uri.removeprefix("sqlite:///")
    if not database or database.startswith(":memory:"):
        return None
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment)
    return (Path(database).resolve().parent / "mlartifacts" / safe).as_uri()


def log_best(study: optuna.Study, record: dict[str, str], weights: bytes | None,
             best: dict[str, Any]) -> None:
    """On the parent run: the best trial's number, value and params, and its weights file."""
    client = _client(record["uri"])
    run_id = record["parent_run_id"]
    client.set_tag(run_id, "autotune.best_trial", str(best["number"]))
    client.log_metric(run_id, "best_value", float(best["value"]))
    for name, value in best["params"].items():
        client.set_tag(run_id, f"best.{name}", str(value))
    if weights is not None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"trial-{best['number']}-weights.safetensors"
            path.write_bytes(weights)
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status="FINISHED")  # this run's part; a resume adds to it


class MLflowTracker(QueuedTracker):
    """Logs each trial of this process as a child run of the study's parent run (from the
    thread QueuedTracker runs); `close()` writes what is queued and waits for it."""

    name = "MLflow runs"

    def __init__(self, record: dict[str, str], metric: str) -> None:
        check_installed()
        super().__init__()
        self.record = record
        self.metric = metric
        self._runs: dict[int, str] = {}  # trial number -> its run id (the thread's own)
        self._client_: Any = None

    @property
    def client(self) -> Any:
        """The MLflow client, made in the writer thread on first use."""
        if self._client_ is None:
            self._client_ = _client(self.record["uri"])
        return self._client_

    def _start(self, number: int, retries: list[int]) -> None:
        tags = {"mlflow.parentRunId": self.record["parent_run_id"],
                "autotune.trial": str(number)}
        if retries:
            tags["autotune.retries"] = ",".join(map(str, retries))
        run = self.client.create_run(self.record["experiment_id"], run_name=f"trial-{number}",
                                      tags=tags)
        self._runs[number] = run.info.run_id

    def _epoch(self, number: int, epoch: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        if number not in self._runs:
            self._start(number, [])
        now = _now_ms()
        self.client.log_batch(self._runs[number], metrics=[
            Metric(key=name, value=value, timestamp=now, step=epoch)
            for name, value in scalars.items()])

    def _finish(self, number: int, params: dict[str, Any], state: str, value: float | None,
                reason: str | None) -> None:
        from mlflow.entities import Param, RunTag

        if number not in self._runs:
            self._start(number, [])
        run_id = self._runs.pop(number)
        tags = [RunTag("autotune.state", state)]
        if reason:
            tags.append(RunTag("autotune.reason", reason[:5000]))
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()],
                               tags=tags)
        if value is not None:
            self.client.log_metric(run_id, f"final_{self.metric}", float(value))
        self.client.set_terminated(run_id, status=STATUS[state])


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
