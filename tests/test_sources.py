"""Data sets by scheme and path: `csv:table.csv` with `target`, `tensors:file.pt|.npz`."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from sklearn.datasets import load_diabetes, load_iris

from autotune.training._sources import csv_table, tensor_file
from tests.test_plugins import export_best, refused_with_storage_untouched, run

STUDY = '''
name = "table"
dataset = "DATASET"
TARGET
LOSS
[budget]
n_trials = 3
max_epochs = 15
[pruner]
name = "none"
[fixed]
width = 32
depth = 1
optimizer = "adam"
[space]
lr = { low = 3e-3, high = 3e-2, log = true }
'''


def write_study(folder: Path, dataset: str, target: str | None = None, extra: str = "") -> Path:
    text = STUDY.replace("DATASET", dataset)
    text = text.replace("TARGET", f'target = "{target}"' if target else "")
    path = folder / "study.toml"
    path.write_text(text.replace("LOSS", extra))
    return path


def write_iris(path: Path) -> None:
    iris = load_iris()
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([*iris.feature_names, "species"])
        for x, y in zip(iris.data, iris.target, strict=True):
            writer.writerow([*x, iris.target_names[y]])


def write_diabetes(path: Path) -> None:
    table = load_diabetes()
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([*table.feature_names, "progression"])
        for x, y in zip(table.data, table.target, strict=True):
            writer.writerow([*x, y])


def test_a_csv_classification_with_named_labels_runs_from_another_folder(tmp_path):
    (tmp_path / "project" / "data").mkdir(parents=True)
    write_iris(tmp_path / "project" / "data" / "iris.csv")
    study_file = write_study(tmp_path / "project", "csv:data/iris.csv", "species")
    url = f"sqlite:///{tmp_path / 'c.db'}"
    result = run("--study", str(study_file), "--storage", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="table", storage=url)
    assert study.best_value > 0.8
    assert study.user_attrs["autotune:definition"]["target"] == ["species"]
    assert study.user_attrs["autotune:data_source"].startswith(
        f"csv:{tmp_path / 'project' / 'data' / 'iris.csv'} (sha256 ")
    assert "evaluated once on 30 test examples" in result.stdout  # a fixed fifth of 150


def test_a_csv_regression_scored_by_r2(tmp_path):
    write_diabetes(tmp_path / "diabetes.csv")
    study_file = write_study(tmp_path, "csv:diabetes.csv", "progression",
                             'loss = "mse"\nmetric = "val_r2"')
    # the targets stay in their own units (25-346): larger steps, more epochs to reach them
    study_file.write_text(study_file.read_text().replace("high = 3e-2", "high = 1e-1"))
    url = f"sqlite:///{tmp_path / 'r.db'}"
    result = run("--study", str(study_file), "--storage", url, "--max-epochs", "40",
                 "--seed", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="table", storage=url)
    assert study.direction.name == "MAXIMIZE" and study.best_value > 0.2
    assert "test r2 of best configuration" in result.stdout


def test_csv_features_are_standardised_with_the_training_part_only(tmp_path):
    write_iris(tmp_path / "iris.csv")
    data = csv_table(tmp_path / "iris.csv", ["species"], "classification", 0.2, 3)
    x_train, y_train = data.train
    assert torch.allclose(x_train.mean(0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(x_train.std(0), torch.ones(4), atol=1e-5)
    assert not torch.allclose(data.val[0].mean(0), torch.zeros(4), atol=1e-3)
    assert (len(x_train), len(data.val[0]), len(data.test[0])) == (96, 24, 30)
    assert sorted(set(y_train.tolist())) == [0, 1, 2]
    # the test fifth does not move with the study's split seed
    other = csv_table(tmp_path / "iris.csv", ["species"], "classification", 0.2, 4)
    assert torch.equal(data.test[1], other.test[1])


def test_tensor_files_of_split_and_single_tables_train(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    torch.save({"train": (x[:240], y[:240]), "test": (x[240:], y[240:])}, tmp_path / "t.pt")
    np.savez(tmp_path / "t.npz", x=x.numpy(), y=y.numpy())
    for name in ("t.pt", "t.npz"):
        study_file = write_study(tmp_path, f"tensors:{name}")
        url = f"sqlite:///{tmp_path / (name + '.db')}"
        result = run("--study", str(study_file), "--storage", url, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert optuna.load_study(study_name="table", storage=url).best_value > 0.8
        assert "evaluated once on 60 test examples" in result.stdout
    assert len(tensor_file(tmp_path / "t.npz", 0.1, 0).val[0]) == 24  # a tenth of the rest


@pytest.mark.parametrize(("dataset", "target", "csv_text", "message"), [
    ("csv:t.csv", None, "a,b\n1,2\n", "target: a csv: data set needs target"),
    ("csv:t.csv", "c", "a,b\n1,2\n", "no column 'c'; columns: a, b"),
    ("csv:t.csv", "b", "a,b\nx,1\n1,2\n", "column 'a' holds 'x', not a number"),
    ("csv:missing.csv", "b", "a,b\n1,2\n", "missing.csv' does not exist"),
    ("digits", "b", "a,b\n1,2\n", "target: only a csv: data set takes a target column"),
    ("tensors:t.csv", None, "a,b\n1,2\n", "give a .pt or a .npz file"),
])
def test_a_bad_table_is_refused_in_one_line(tmp_path, dataset, target, csv_text, message):
    (tmp_path / "t.csv").write_text(csv_text)
    line = refused_with_storage_untouched(write_study(tmp_path, dataset, target), tmp_path)
    assert message in line, line


def test_an_exported_csv_study_names_its_table_from_the_new_folder_and_retrains(tmp_path):
    (tmp_path / "project").mkdir()
    write_iris(tmp_path / "project" / "iris.csv")
    study_file = write_study(tmp_path / "project", "csv:iris.csv", "species")
    url = f"sqlite:///{tmp_path / 'c.db'}"
    assert run("--study", str(study_file), "--storage", url, "--n-trials", "1",
               cwd=tmp_path).returncode == 0
    text = export_best(tmp_path, "table", url)
    assert 'dataset = "csv:../project/iris.csv"' in text and 'target = "species"' in text
    retrained = run("--study", str(tmp_path / "exports" / "best.toml"), "--storage", url,
                    cwd=tmp_path)
    assert retrained.returncode == 0, retrained.stderr


class Pickled:  # an object torch.load(weights_only=True) refuses to rebuild
    def __reduce__(self):
        return (print, ("this would run on load",))


def test_a_tensor_file_that_needs_arbitrary_unpickling_is_refused_in_one_line(tmp_path):
    torch.save({"x": torch.zeros(4, 2), "y": Pickled()}, tmp_path / "evil.pt")
    line = refused_with_storage_untouched(write_study(tmp_path, "tensors:evil.pt"), tmp_path)
    assert "dataset 'tensors:" in line and "cannot read: UnpicklingError" in line, line
