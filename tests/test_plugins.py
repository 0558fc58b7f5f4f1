"""A user's own model, named by its file in a study file: trained, resumed, refused when bad."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tests.conftest import REPO, file_hashes

MODEL = '''
import torch
from torch import nn


class Net(nn.Module):  # not a Sequential: no built-in model's shape
    def __init__(self, n_in, hidden, n_out):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(n_in, hidden), nn.Tanh())
        self.head = nn.Linear(hidden, n_out)

    def forward(self, x):
        return self.head(self.body(x))


def build(params, info):
    if params["hidden"] == 13:
        raise ValueError("13 hidden units are unlucky")
    n_in = 1
    for size in info.input_shape:
        n_in *= size
    return Net(n_in, params["hidden"] * params["scale"], info.n_outputs)


def not_a_model(params, info):
    return "a string"


def one_output(params, info):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(1))
'''

STUDY = '''
name = "mine"
dataset = "digits"
model = "code/model.py:build"
seed = 5
[budget]
n_trials = 6
max_epochs = 2
[sampler]
name = "random"
[pruner]
name = "none"
[fixed]
scale = 2
[space]
hidden = { choices = [8, 13, 24] }
lr = { low = 1e-3, high = 1e-1, log = true }
optimizer = { choices = ["sgd", "adam"] }
'''


def write_user_study(folder: Path, study: str = STUDY, model: str = MODEL) -> Path:
    (folder / "code").mkdir(parents=True, exist_ok=True)
    (folder / "code" / "model.py").write_text(model)
    path = folder / "study.toml"
    path.write_text(study)
    return path


def run(*args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "autotune.run", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_without(package: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`autotune.run ARGS` where importing `package` fails, as where it is not installed
    (a package of that name ahead on the path raises ImportError)."""
    shadow = cwd / "shadow" / package
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed here')\n")
    return run(*args, cwd=cwd, env={"PYTHONPATH": f"{shadow.parent}{os.pathsep}{REPO}"})


def refused_with_storage_untouched(study_file: Path, tmp_path: Path) -> str:
    """Run a study that must be refused against a storage holding another study: exit 2,
    one line on stderr (returned), and the storage's files byte for byte as they were."""
    url = f"sqlite:///{tmp_path / 'kept.db'}"
    store = optuna.storages.RDBStorage(url)
    optuna.create_study(study_name="other", storage=store)
    store.engine.dispose()  # no connection of this process keeps -wal/-shm open
    before = file_hashes(url)
    result = run("--study", str(study_file), "--storage", url, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert file_hashes(url) == before
    return lines[0]


def test_a_user_model_trains_on_two_workers_resumes_and_its_errors_fail_only_trials(tmp_path):
    study_file = write_user_study(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"  # the run starts from another working directory
    elsewhere.mkdir()
    url = f"sqlite:///{tmp_path / 'mine.db'}"
    first = run("--study", str(study_file), "--storage", url, "--workers", "2", "--n-trials",
                "4", cwd=elsewhere)
    assert first.returncode == 0, first.stderr
    study = optuna.load_study(study_name="mine", storage=url)
    finished = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(finished) == 4
    assert all(t.params["hidden"] in (8, 24) for t in finished)
    # (with two workers, one may also claim a surplus trial, failed unrun: not the user's)
    for failed in (t for t in study.trials if t.state.name == "FAIL"
                   and not t.user_attrs["fail_reason"].startswith("surplus")):
        assert failed.params["hidden"] == 13  # the user's error fails that trial only
        assert failed.user_attrs["fail_reason"] == (
            "ValueError in your code: 13 hidden units are unlucky")
        assert 'raise ValueError("13 hidden units are unlucky")' in failed.user_attrs[
            "traceback"]
    definition = study.user_attrs["autotune:definition"]
    assert definition["model"] == "code/model.py:build" and definition["model_code"]
    resumed = run("--study", str(study_file), "--storage", url, cwd=elsewhere)
    assert resumed.returncode == 0, resumed.stderr
    study = optuna.load_study(study_name="mine", storage=url)
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 6
    assert "test accuracy of best configuration" in resumed.stdout


def test_a_resume_on_changed_model_code_is_refused_unless_allowed(tmp_path):
    study_file = write_user_study(tmp_path)
    url = f"sqlite:///{tmp_path / 'mine.db'}"
    assert run("--study", str(study_file), "--storage", url, "--n-trials", "1",
               cwd=tmp_path).returncode == 0
    model = tmp_path / "code" / "model.py"
    model.write_text(model.read_text().replace("nn.Tanh()", "nn.ReLU()"))
    before = file_hashes(url)
    refused = run("--study", str(study_file), "--storage", url, "--n-trials", "2",
                  cwd=tmp_path)
    assert refused.returncode == 2
    assert "model_code: stored" in refused.stderr
    assert file_hashes(url) == before
    allowed = run("--study", str(study_file), "--storage", url, "--n-trials", "2",
                  "--allow-changes", cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stderr


@pytest.mark.parametrize(("model_line", "code", "message"), [
    ('model = "code/missing.py:build"', MODEL, "code/missing.py' does not exist"),
    ('model = "code/model.py:nothing"', MODEL, "has no function 'nothing'"),
    ('model = "code/model.py:build"', "import not_a_package\n",
     "importing 'code/model.py:build' failed: ModuleNotFoundError"),
    ('model = "code/model.py:not_a_model"', MODEL, "returned str, not a torch.nn.Module"),
    ('model = "code/model.py:one_output"', MODEL,
     "gives outputs of shape (2, 1) for a batch of 2; the loss 'cross_entropy' needs (2, 10)"),
    ('model = "code/model.py"', MODEL, "unknown value 'code/model.py'"),
])
def test_bad_user_code_is_refused_in_one_line_with_storage_untouched(
        tmp_path, model_line, code, message):
    study_file = write_user_study(
        tmp_path, STUDY.replace('model = "code/model.py:build"', model_line), code)
    line = refused_with_storage_untouched(study_file, tmp_path)
    assert message in line and str(study_file) in line


def export_best(tmp_path: Path, study: str, url: str) -> str:
    """`autotune.export` of a study's best trial into tmp_path/exports/best.toml: its text."""
    out = tmp_path / "exports" / "best.toml"
    out.parent.mkdir()
    exported = subprocess.run([sys.executable, "-m", "autotune.export", "--study", study,
                               "--storage", url, "--out", str(out)], cwd=tmp_path, text=True,
                              capture_output=True, timeout=120)
    assert exported.returncode == 0, exported.stderr
    return out.read_text()


def test_an_exported_user_study_names_its_model_from_the_new_folder_and_retrains(tmp_path):
    study_file = write_user_study(tmp_path / "project", STUDY.replace(
        'dataset = "digits"', 'dataset = "digits"\nloss = "hinge"\nmetric = "val_loss"'))
    url = f"sqlite:///{tmp_path / 'mine.db'}"
    assert run("--study", str(study_file), "--storage", url, "--n-trials", "2",
               cwd=tmp_path).returncode == 0
    text = export_best(tmp_path, "mine", url)
    assert 'model = "../project/code/model.py:build"' in text
    assert 'loss = "hinge"' in text and 'metric = "val_loss"' in text
    retrained = run("--study", str(tmp_path / "exports" / "best.toml"), "--storage", url,
                    "--n-trials", "1", cwd=tmp_path)
    assert retrained.returncode == 0, retrained.stderr
    best = optuna.load_study(study_name="mine-best", storage=url)
    assert best.direction == optuna.study.StudyDirection.MINIMIZE


def test_the_own_model_example_runs_as_the_readme_says(tmp_path):
    result = run("--study", str(REPO / "examples" / "own-model" / "study.toml"), "--storage",
                 f"sqlite:///{tmp_path / 'example.db'}", "--n-trials", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "study own-model: 3 finished trials" in result.stdout


DATA = '''
import torch
import autotune


def load(data_dir):
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[2.0, 0.0, 0.0, 1.0], [0.0, 2.0, 0.0, -1.0], [0.0, 0.0, 2.0, 0.0]])
    y = torch.randint(0, 3, (600,), generator=g)
    x = centers[y] + 0.8 * torch.randn(600, 4, generator=g)
    return autotune.Data(train=(x[:450], y[:450]), test=(x[450:], y[450:]))


def no_test(data_dir):
    data = load(data_dir)
    return autotune.Data(train=data.train, val=data.test)


def floats(data_dir):
    return autotune.Data(train=(torch.zeros(10, 4), torch.zeros(10)))


def nothing(data_dir):
    return [1, 2, 3]
'''

TABLE_STUDY = '''
name = "table"
dataset = "code/data.py:load"
model = "MODEL"
[budget]
n_trials = 3
max_epochs = 3
[pruner]
name = "none"
[fixed]
width = 16
depth = 1
[space]
lr = { low = 1e-3, high = 1e-1, log = true }
'''


@pytest.mark.parametrize("model", ["mlp", "code/model.py:build"])
def test_a_user_data_set_of_feature_rows_trains_a_built_in_or_a_user_model(tmp_path, model):
    extra = "" if model == "mlp" else "hidden = 16\nscale = 1\n"  # params of build()
    study_file = write_user_study(tmp_path, TABLE_STUDY.replace("MODEL", model).replace(
        "depth = 1\n", "depth = 1\n" + extra))
    (tmp_path / "code" / "data.py").write_text(DATA)
    url = f"sqlite:///{tmp_path / 't.db'}"
    result = run("--study", str(study_file), "--storage", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="table", storage=url)
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 3
    assert study.best_value > 0.6  # three separable clusters
    assert study.user_attrs["autotune:definition"]["dataset_code"]
    assert "code/data.py:load (sha256 " in study.user_attrs["autotune:data_source"]
    assert "test accuracy of best configuration" in result.stdout  # on the 150 test rows
    assert "evaluated once on 150 test examples" in result.stdout


def test_a_user_data_set_without_a_test_split_skips_the_test_evaluation(tmp_path):
    study_file = write_user_study(tmp_path, TABLE_STUDY.replace("MODEL", "mlp").replace(
        "data.py:load", "data.py:no_test"))
    (tmp_path / "code" / "data.py").write_text(DATA)
    result = run("--study", str(study_file), "--storage", f"sqlite:///{tmp_path / 't.db'}",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test accuracy" not in result.stdout and "best trial: #" in result.stdout


@pytest.mark.parametrize(("function", "message"), [
    ("floats", "labels must be class indices (N,) of an integer type"),
    ("nothing", "returned list, not autotune.Data"),
    ("missing", "has no function 'missing'"),
])
def test_a_bad_user_data_set_is_refused_in_one_line(tmp_path, function, message):
    study_file = write_user_study(tmp_path, TABLE_STUDY.replace("MODEL", "mlp").replace(
        "data.py:load", f"data.py:{function}"))
    (tmp_path / "code" / "data.py").write_text(DATA)
    assert message in refused_with_storage_untouched(study_file, tmp_path)


SEQUENTIAL_MODEL = '''
from torch import nn


def build(params, info):  # the built-in MLP's shape: the speed-up layer recognises it
    return nn.Sequential(nn.Flatten(), nn.Linear(64, params["hidden"]), nn.ReLU(),
                         nn.Linear(params["hidden"], info.n_outputs))
'''


def test_a_user_model_trains_plain_unless_its_study_opts_in_to_the_speed_ups(tmp_path):
    values = {}
    for opt_in in (False, True):
        folder = tmp_path / str(opt_in)
        text = STUDY.replace("seed = 5", "seed = 5\nspeedups = true" if opt_in else "seed = 5")
        text = text.replace("scale = 2\n", "").replace("[8, 13, 24]", "[8, 24]")
        study_file = write_user_study(folder, text, SEQUENTIAL_MODEL)
        url = f"sqlite:///{folder / 'm.db'}"
        result = run("--study", str(study_file), "--storage", url, "--n-trials", "3",
                     cwd=folder)
        assert result.returncode == 0, result.stderr
        trials = optuna.load_study(study_name="mine", storage=url).trials
        assert {t.user_attrs["trained_on"] for t in trials} == {
            "torch + speed-ups" if opt_in else "torch"}
        values[opt_in] = [t.value for t in trials]
    # the same trials: the layer's steps give plain torch's results, up to float rounding
    assert values[True] == pytest.approx(values[False], abs=0.02)
