"""Your own training loop: `train = "train.py:train"` gets params and an autotune.Trial;
real processes, a real SQLite file, a worker SIGKILLed mid-trial and its trial retried."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tests.conftest import REPO
from tests.test_plugins import refused_with_storage_untouched, run

TRAIN = '''
import os
import signal

import torch
from torch import nn

import autotune


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 5, generator=g)
    y = (x[:, 0] - x[:, 1] > 0).long()
    return x[:300], y[:300], x[300:], y[300:]


def train(params, trial):
    assert isinstance(trial, autotune.Trial) and trial.device.type == "cpu"
    if params["hidden"] == 3:
        raise ValueError("three hidden units are unlucky")
    x, y, xv, yv = _data()
    model = nn.Sequential(nn.Linear(5, params["hidden"]), nn.ReLU(),
                          nn.Linear(params["hidden"], 2))
    opt = torch.optim.SGD(model.parameters(), lr=params["lr"], momentum=params["momentum"])
    start = 1
    state = trial.restore()
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["epoch"] + 1
    for epoch in range(start, trial.max_epochs + 1):
        for i in range(0, len(x), 30):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i:i + 30]), y[i:i + 30]).backward()
            opt.step()
        with torch.no_grad():
            acc = (model(xv).argmax(1) == yv).float().mean().item()
        try:
            trial.report(epoch, acc, lr=params["lr"])
        except autotune.Pruned:
            with open(f"pruned-{trial.number}", "w") as f:
                f.write(str(epoch))
            raise
        trial.checkpoint({"model": model.state_dict(), "opt": opt.state_dict(),
                          "epoch": epoch})
        if os.environ.get("KILL_AT") == str(epoch) and trial.number == 0 and state is None:
            os.kill(os.getpid(), signal.SIGKILL)  # a worker dies mid-trial
    return acc


def returns_text(params, trial):
    trial.report(1, 0.5)
    return "fine"


def reports_nan(params, trial):
    trial.report(1, float("nan"))
'''

STUDY = '''
name = "loop"
train = "code/train.py:TRAIN"
seed = 2
[budget]
n_trials = 8
max_epochs = 4
[sampler]
name = "random"
[pruner]
name = "median"
n_startup_trials = 2
n_warmup_steps = 0
[fixed]
momentum = 0.5
[space]
hidden = { choices = [3, 8, 16] }
lr = { low = 1e-4, high = 0.3, log = true }
[[start_from]]  # two good ones, an unlucky one, then one the median pruner stops
hidden = 16
lr = 0.1
[[start_from]]
hidden = 8
lr = 0.2
[[start_from]]
hidden = 3
lr = 0.1
[[start_from]]
hidden = 8
lr = 0.0001
'''


def write(folder: Path, train: str = "train", study: str = STUDY) -> Path:
    (folder / "code").mkdir(parents=True, exist_ok=True)
    (folder / "code" / "train.py").write_text(TRAIN)
    path = folder / "study.toml"
    path.write_text(study.replace("TRAIN", train))
    return path


def test_a_train_function_is_searched_pruned_and_its_errors_fail_only_its_trials(tmp_path):
    study_file = write(tmp_path / "project")
    url = f"sqlite:///{tmp_path / 'loop.db'}"
    done = run("--study", str(study_file), "--storage", url, cwd=tmp_path / "project")
    assert done.returncode == 0, done.stderr
    assert "trains with your function code/train.py:train" in done.stderr
    study = optuna.load_study(study_name="loop", storage=url)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert study.metric_names == ["val_accuracy"]
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 8
    for trial in finished:
        assert trial.user_attrs["trained_on"] == "your function code/train.py:train"
        assert trial.user_attrs["epochs_run"] == len(trial.intermediate_values)
        assert "momentum" not in trial.params  # fixed: handed to train, not searched
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert complete and all(t.value == t.intermediate_values[4] for t in complete)
    assert study.best_value > 0.85  # the classes are a line apart: a fitted model finds it
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert 3 in [t.number for t in pruned]  # lr 1e-4 is far behind the median at epoch 1
    for trial in pruned:
        assert trial.user_attrs["prune_reason"]
        epoch = (tmp_path / "project" / f"pruned-{trial.number}").read_text()
        assert int(epoch) == max(trial.intermediate_values)  # Pruned reached the function
    unlucky = [t for t in study.trials if t.params.get("hidden") == 3]
    for trial in unlucky:
        assert trial.state.name == "FAIL"
        assert trial.user_attrs["fail_reason"] == (
            "ValueError in your code: three hidden units are unlucky")
        assert 'train.py", line' in trial.user_attrs["traceback"]
    assert "test accuracy" not in done.stdout  # no test split of autotune's: none evaluated
    assert "study loop: 8 finished trials" in done.stdout


def test_a_killed_worker_s_trial_is_retried_and_restores_its_checkpoint(tmp_path):
    study = (STUDY.replace("n_trials = 8", "n_trials = 2").split("[[start_from]]")[0]
             + "[[start_from]]\nhidden = 16\nlr = 0.1\n")  # trial 0 trains, and is killed
    study_file = write(tmp_path / "project", study=study)
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = run("--study", str(study_file), "--storage", url, "--workers", "2",
               "--mlflow", mlflow_uri, "--tensorboard", str(tmp_path / "tb"),
               cwd=tmp_path / "project", env={"KILL_AT": "2", "AUTOTUNE_HEARTBEAT_S": "1",
                                              "AUTOTUNE_GRACE_S": "3"})
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="loop", storage=url)
    dead = study.trials[0]
    assert dead.state.name == "FAIL"
    assert "stopped sending heartbeats" in dead.user_attrs["fail_reason"]
    retry = next(t for t in study.trials if 0 in t.system_attrs.get("retry_history", []))
    assert retry.state.name in ("COMPLETE", "PRUNED")
    assert retry.params == dead.params and retry.user_attrs["seed"] == dead.user_attrs["seed"]
    assert retry.user_attrs["resumed_from"] == {"trial": 0, "epoch": 2}
    for epoch in (1, 2):  # the dead trial's epochs carry on in the retry's curve
        assert retry.intermediate_values[epoch] == dead.intermediate_values[epoch]
    if retry.state.name == "COMPLETE":
        assert sorted(retry.intermediate_values) == [1, 2, 3, 4]
    assert not [t for t in study.trials if t.state.name in ("RUNNING", "WAITING")]
    # the retry's MLflow run and TensorBoard folder name the trial it continues
    import mlflow
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    mlflow.set_tracking_uri(mlflow_uri)
    runs = mlflow.search_runs(experiment_names=["loop"])
    child = runs[runs["tags.autotune.trial"] == str(retry.number)].iloc[0]
    assert child["tags.autotune.retries"] == "0"
    events = EventAccumulator(str(tmp_path / "tb" / "loop" / f"trial-{retry.number}"))
    events.Reload()
    assert "retries/text_summary" in events.Tags()["tensors"]


def test_on_a_journal_a_killed_worker_s_silent_trial_is_retried_from_its_checkpoint(tmp_path):
    """A journal keeps no Optuna heartbeats: the trial beats through its attribute, and the
    other worker (or the launching run) fails it once the beat stops changing."""
    study = (STUDY.replace("n_trials = 8", "n_trials = 2").split("[[start_from]]")[0]
             + "[[start_from]]\nhidden = 16\nlr = 0.1\n")
    study_file = write(tmp_path / "project", study=study)
    url = f"journal:///{tmp_path / 'kill.log'}"
    done = run("--study", str(study_file), "--storage", url, "--workers", "2",
               cwd=tmp_path / "project", env={"KILL_AT": "2", "AUTOTUNE_HEARTBEAT_S": "1",
                                              "AUTOTUNE_GRACE_S": "3"})
    assert done.returncode == 0, done.stderr
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "kill.log")))
    trials = optuna.load_study(study_name="loop", storage=storage).trials
    dead = trials[0]
    assert dead.state.name == "FAIL"
    assert "stopped sending heartbeats" in dead.user_attrs["fail_reason"]
    assert "autotune:beat" in dead.system_attrs
    retry = next(t for t in trials if 0 in t.system_attrs.get("retry_history", []))
    assert retry.params == dead.params
    assert retry.user_attrs["resumed_from"] == {"trial": 0, "epoch": 2}
    assert len([t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]) == 2
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]


@pytest.mark.parametrize("function, reason", [
    ("returns_text", "train() must return the trial's val_accuracy: the returned value must "
                     "be a number, got 'fine'"),
    ("reports_nan", "val_accuracy is nan at epoch 1"),
])
def test_a_train_function_s_bad_value_fails_its_trial_with_the_reason(tmp_path, function,
                                                                      reason):
    study = STUDY.replace("n_trials = 8", "n_trials = 1")
    study_file = write(tmp_path / "project", function, study=study)
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    done = run("--study", str(study_file), "--storage", url, "--n-trials", "1", cwd=tmp_path)
    assert done.returncode == 1  # every trial failed: the run stops and says so
    trial = optuna.load_study(study_name="loop", storage=url).trials[0]
    assert trial.state.name == "FAIL"
    assert trial.user_attrs["fail_reason"] == reason


@pytest.mark.parametrize("edit, message", [
    (('seed = 2', 'seed = 2\ndataset = "digits"'),
     "dataset: is for autotune's own training; a study whose train trains loads its own "
     "data and builds its own model: remove it"),
    (('train = "code/train.py:TRAIN"', 'train = "code/train.py:nope"'),
     "has no function 'nope'"),
    (('seed = 2', 'seed = 2\nmetric = "f1"'),
     'direction: is required: metric \'f1\' is your own; add direction = "maximize" or '
     '"minimize"'),
    (('seed = 2', 'seed = 2\nmetric = "val_loss"\ndirection = "maximize"'),
     "direction: metric 'val_loss' is minimized; remove direction or name your metric "
     "otherwise"),
    (('seed = 2', 'seed = 2\nargs = "--lr {lr}"'),
     'args: only a study with script = "train.py" takes it; a train function reports '
     "through trial.report()"),
])
def test_a_bad_train_study_is_refused_in_one_line_with_storage_untouched(tmp_path, edit,
                                                                         message):
    study_file = write(tmp_path / "project", study=STUDY.replace(*edit))
    line = refused_with_storage_untouched(study_file, tmp_path)
    assert line.startswith(f"error: {study_file}: ") and line.endswith(message), line


def test_a_built_in_study_refuses_a_direction_of_its_own(tmp_path):
    study_file = tmp_path / "d.toml"
    study_file.write_text('dataset = "digits"\ndirection = "minimize"\n')
    line = refused_with_storage_untouched(study_file, tmp_path)
    assert line.endswith("direction: follows the metric ('val_accuracy' is maximized); only "
                         "a study whose train function or script reports a metric of its "
                         "own sets it")


def test_tune_runs_a_train_function_with_a_metric_of_its_own(tmp_path):
    script = tmp_path / "mine.py"
    script.write_text('''
import sys
import autotune


def train(params, trial):
    loss = (params["x"] - 2.0) ** 2
    for epoch in range(1, trial.max_epochs + 1):
        trial.report(epoch, loss + 1.0 / epoch)
    return loss


if __name__ == "__main__":
    study = autotune.tune(name="quad", train=train, metric="error", direction="minimize",
                          space={"x": {"low": -5.0, "high": 5.0}}, n_trials=12,
                          max_epochs=2, storage=sys.argv[1], sampler="tpe", pruner="none")
    print("BEST", study.direction.name, round(study.best_value, 3), study.metric_names)
''')
    url = f"sqlite:///{tmp_path / 'quad.db'}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(script), url], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    best = done.stdout.split("BEST ")[1].split()
    assert best[0] == "MINIMIZE" and float(best[1]) < 1.0 and best[2] == "['error']"


LIGHTNING = '''
import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from autotune.lightning import PruningCallback


class Classifier(pl.LightningModule):
    def __init__(self, lr):
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 2))

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_acc", (self.net(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def train(params, trial):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 5, generator=g)
    y = (x[:, 0] - x[:, 1] > 0).long()
    fit = DataLoader(TensorDataset(x[:300], y[:300]), batch_size=30)
    val = DataLoader(TensorDataset(x[300:], y[300:]), batch_size=100)
    trainer = pl.Trainer(max_epochs=trial.max_epochs, accelerator="cpu", logger=False,
                         enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False,
                         callbacks=[PruningCallback(trial, "val_acc")])
    trainer.fit(Classifier(params["lr"]), fit, val)
    return trainer.callback_metrics["val_acc"].item()
'''


def test_a_lightning_trainer_reports_through_the_pruning_callback_and_is_pruned(tmp_path):
    folder = tmp_path / "project"
    (folder / "code").mkdir(parents=True)
    (folder / "code" / "train.py").write_text(LIGHTNING)
    study = (STUDY.split("[fixed]")[0] + "[space]\nlr = { low = 1e-4, high = 0.5, log = true }"
             "\n[[start_from]]\nlr = 0.3\n[[start_from]]\nlr = 0.2\n[[start_from]]\n"
             "lr = 0.0001\n").replace("TRAIN", "train").replace("n_trials = 8", "n_trials = 3")
    (folder / "study.toml").write_text(study)
    url = f"sqlite:///{tmp_path / 'pl.db'}"
    done = run("--study", str(folder / "study.toml"), "--storage", url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    trials = optuna.load_study(study_name="loop", storage=url).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert sorted(trials[0].intermediate_values) == [1, 2, 3, 4]
    assert trials[0].value == trials[0].intermediate_values[4] > 0.85
    assert list(trials[2].intermediate_values) == [1] and trials[2].user_attrs["prune_reason"]


def test_the_own_loop_example_runs_as_the_readme_says(tmp_path):
    url = f"sqlite:///{tmp_path / 'example.db'}"
    result = run("--study", str(REPO / "examples" / "own-loop" / "study.toml"), "--storage",
                 url, "--n-trials", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "study own-loop: 3 finished trials" in result.stdout
    study = optuna.load_study(study_name="own-loop", storage=url)
    assert study.best_value > 0.8  # digits: a fitted MLP is right on most of them
