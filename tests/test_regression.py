"""Regression: float targets, mse/l1/smooth_l1/huber losses, val_rmse/val_mae/val_r2 metrics,
from a user's files outside the repository, through the command and through autotune.tune."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
import torch
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from autotune.errors import SpecError
from autotune.spec._spec import parse_spec
from autotune.training import _losses as losses
from tests.test_plugins import refused_with_storage_untouched, run

DATA = '''
import torch
import autotune


def _rows(n, width):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 6, generator=g)
    w = torch.linspace(-1.0, 1.0, 6 * width).reshape(6, width)
    return x, x @ w + 0.05 * torch.randn(n, width, generator=g)


def load(data_dir):
    x, y = _rows(500, 1)
    y = y[:, 0]  # (N,) floats: one target
    return autotune.Data(train=(x[:400], y[:400]), test=(x[400:], y[400:]))


def two_targets(data_dir):
    x, y = _rows(500, 2)
    return autotune.Data(train=(x[:350], y[:350]), val=(x[350:420], y[350:420]),
                         test=(x[420:], y[420:]))


def bool_targets(data_dir):
    x, y = _rows(50, 1)
    return autotune.Data(train=(x, y[:, 0] > 0))
'''

MODEL = '''
from torch import nn


def build(params, info):
    (n_in,) = info.input_shape
    return nn.Sequential(nn.Linear(n_in, params["hidden"]), nn.ReLU(),
                         nn.Linear(params["hidden"], info.n_outputs))


def flat(params, info):  # (N,) outputs for one target: taken as (N, 1)
    return nn.Sequential(nn.Linear(info.input_shape[0], 1), nn.Flatten(0))


def three(params, info):
    return nn.Linear(info.input_shape[0], 3)
'''

STUDY = '''
name = "reg"
dataset = "code/data.py:DATA"
model = "code/model.py:MODEL"
loss = "LOSS"
metric = "METRIC"
seed = 3
[budget]
n_trials = 4
max_epochs = 4
[pruner]
name = "none"
[fixed]
batch_size = 32  # ~12 steps an epoch: any lr in the range fits the line in 4 epochs
[space]
hidden = { choices = [8, 32] }
lr = { low = 1e-2, high = 4e-2, log = true }
optimizer = { choices = ["adam"] }
'''


def write(folder: Path, data: str = "load", model: str = "build", loss: str = "mse",
          metric: str = "val_rmse", name: str = "reg") -> Path:
    (folder / "code").mkdir(parents=True, exist_ok=True)
    (folder / "code" / "data.py").write_text(DATA)
    (folder / "code" / "model.py").write_text(MODEL)
    text = STUDY.replace("DATA", data).replace("MODEL", model).replace("LOSS", loss)
    text = text.replace("METRIC", metric).replace('name = "reg"', f'name = "{name}"')
    path = folder / "study.toml"
    path.write_text(text)
    return path


def test_a_regression_study_runs_on_two_workers_resumes_and_minimises_rmse(tmp_path):
    study_file = write(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    first = run("--study", str(study_file), "--storage", url, "--workers", "2", "--n-trials",
                "3", cwd=elsewhere)
    assert first.returncode == 0, first.stderr
    resumed = run("--study", str(study_file), "--storage", url, cwd=elsewhere)
    assert resumed.returncode == 0, resumed.stderr
    study = optuna.load_study(study_name="reg", storage=url)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4
    # the targets' spread is ~1.4; a fitted model's RMSE is a fraction of it
    assert 0 < study.best_value < 0.7
    assert study.user_attrs["autotune:definition"]["loss"] == "mse"
    test = study.user_attrs["autotune:test_result"]
    assert test["metric"] == "val_rmse" and "test_accuracy" not in test
    assert 0 < test["test_value"] < 1.0 and test["n_test"] == 100
    assert "test rmse of best configuration: " in resumed.stdout
    assert "evaluated once on 100 test examples" in resumed.stdout
    assert "accuracy" not in resumed.stdout


@pytest.mark.parametrize(("loss", "metric", "direction"), [
    ("l1", "val_mae", "MINIMIZE"),
    ("huber", "val_r2", "MAXIMIZE"),
    ("smooth_l1", "val_loss", "MINIMIZE"),
])
def test_two_targets_with_each_loss_and_metric_through_tune(tmp_path, loss, metric, direction):
    import autotune

    study_file = write(tmp_path, data="two_targets", loss=loss, metric=metric)
    study = autotune.tune(str(study_file), n_trials=2, storage=f"sqlite:///{tmp_path / 'r.db'}")
    assert study.direction.name == direction
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 2
    if metric == "val_r2":
        assert 0.5 < study.best_value <= 1.0  # a linear target is well explained
    assert study.user_attrs["autotune:test_result"]["metric"] == metric


def test_a_model_giving_one_flat_output_per_example_fits_one_target(tmp_path):
    study_file = write(tmp_path, model="flat")
    result = run("--study", str(study_file), "--storage", f"sqlite:///{tmp_path / 'r.db'}",
                 "--n-trials", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"model": "three"}, "gives outputs of shape (2, 3) for a batch of 2; the loss 'mse' "
                         "needs (2, 1): one per target (1 per example)"),
    ({"data": "bool_targets"}, "Data.train targets of a regression must be numbers"),
    ({"metric": "val_accuracy"}, "metric: metric 'val_accuracy' does not fit regression loss "
                                 "'mse'; allowed: val_loss, val_rmse, val_mae, val_r2"),
])
def test_bad_regression_input_is_refused_in_one_line(tmp_path, kwargs, message):
    line = refused_with_storage_untouched(write(tmp_path, **kwargs), tmp_path)
    assert message in line, line


def test_float_targets_with_a_classification_loss_point_at_the_regression_losses(tmp_path):
    line = refused_with_storage_untouched(
        write(tmp_path, loss="cross_entropy", metric="val_loss"), tmp_path)
    assert "labels must be class indices" in line
    assert "regression needs a regression loss: mse, l1, smooth_l1, huber" in line


def test_a_regression_loss_on_a_built_in_classification_data_set_is_refused():
    with pytest.raises(SpecError, match=r"s.toml: loss: 'mse' is a regression loss and the "
                                        r"built-in dataset 'digits' has class labels"):
        parse_spec({"dataset": "digits", "loss": "mse"}, path="s.toml")


def test_a_regression_defaults_to_its_loss_on_validation(tmp_path):
    (tmp_path / "d.py").write_text("def load(data_dir):\n    pass\n")
    spec = parse_spec({"dataset": "d.py:load", "loss": "l1"}, path=str(tmp_path / "s.toml"))
    assert spec.metric == "val_loss"
    assert spec.definition()["loss"] == "l1" and spec.definition()["metric"] == "val_loss"


def test_the_regression_metrics_agree_with_scikit_learn():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 2, generator=g)
    y = torch.stack([3 * x[:, 0] + 1, x[:, 1] - 2], dim=1)

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        return torch.stack([2.5 * inputs[:, 0] + 1.2, inputs[:, 1] - 1.5], dim=1)

    predicted = forward(x).numpy()
    # batches of 1024 do not split the sums differently from one pass
    got = {m: losses.evaluate(forward, x, y, "mse", m) for m in
           ("val_rmse", "val_mae", "val_r2", "val_loss")}
    assert got["val_rmse"] == pytest.approx(math.sqrt(mean_squared_error(y, predicted)), rel=1e-6)
    assert got["val_mae"] == pytest.approx(mean_absolute_error(y, predicted), rel=1e-6)
    assert got["val_r2"] == pytest.approx(r2_score(y, predicted), rel=1e-6)
    assert got["val_loss"] == pytest.approx(mean_squared_error(y, predicted), rel=1e-5)


def test_each_regression_loss_is_torchs_own():
    outputs, targets = torch.randn(8, 1), torch.randn(8, 1)
    for name, expected in (("mse", torch.nn.MSELoss()), ("l1", torch.nn.L1Loss()),
                           ("smooth_l1", torch.nn.SmoothL1Loss()),
                           ("huber", torch.nn.HuberLoss())):
        got = losses.LOSSES[name].compute(outputs.flatten(), targets, 0.0)
        assert torch.equal(got, expected(outputs, targets)), name


def test_the_regression_example_runs_as_the_readme_says(tmp_path):
    study = Path(__file__).resolve().parent.parent / "examples" / "regression" / "study.toml"
    result = run("--study", str(study), "--storage", f"sqlite:///{tmp_path / 'ex.db'}",
                 "--n-trials", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "study diabetes-regression: 3 finished trials" in result.stdout
    assert "test rmse of best configuration" in result.stdout
