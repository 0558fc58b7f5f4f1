"""The examples under examples/ that need their data made first, run as README says (the
others are run by the tests of their route: test_plugins, test_regression, test_function,
test_script)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import optuna

from tests.conftest import REPO
from tests.test_plugins import run

FINETUNE = REPO / "examples" / "imagefolder-finetune"


def test_the_imagefolder_finetune_example_trains_a_frozen_and_a_whole_resnet(tmp_path):
    made = subprocess.run([sys.executable, str(FINETUNE / "make_images.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "pretrained-resnet18.pt").is_file()
    assert len(list((tmp_path / "images" / "train").glob("*/*.png"))) == 540
    study = (FINETUNE / "study.toml").read_text() + (
        '\n[[start_from]]\nfreeze = "backbone"\n[[start_from]]\nfreeze = "none"\n'
        "head_lr_multiplier = 4.0\nlr = 0.003\n")
    (tmp_path / "study.toml").write_text(study)
    url = f"sqlite:///{tmp_path / 'ft.db'}"
    done = run("--study", str(tmp_path / "study.toml"), "--storage", url, "--n-trials", "2",
               "--max-epochs", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    frozen, whole = optuna.load_study(study_name="imagefolder-finetune", storage=url).trials
    assert frozen.params["freeze"] == "backbone" and whole.params["freeze"] == "none"
    assert frozen.user_attrs["n_parameters"] == 512 * 5 + 5  # the new head alone
    assert whole.user_attrs["n_parameters"] > 11_000_000
    # a pretrained backbone, tuned whole for one epoch: 0.69-0.83 measured here over lr
    # 1e-3..1e-2 and head multipliers 4-10 (chance: 0.2)
    assert whole.value > 0.6
    assert "evaluated once on 181 test examples" in done.stdout
    shutil.rmtree(tmp_path / "images")


def test_the_csv_regression_example_predicts_better_than_the_mean(tmp_path):
    url = f"sqlite:///{tmp_path / 'csv.db'}"
    done = run("--study", str(REPO / "examples" / "csv-regression" / "study.toml"),
               "--storage", url, "--n-trials", "4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="csv-regression", storage=url)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    # the progression's spread is ~77; predicting its mean would score that
    assert study.best_value < 65
    assert "test rmse of best configuration" in done.stdout
