"""`autotune.tune(...)` from a user's own script: real processes, a real SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna

from tests.conftest import REPO

SCRIPT = '''
import sys
import torch
from torch import nn
import autotune


def load(data_dir):
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 2, (300,), generator=g)
    x = torch.randn(300, 3, generator=g) + 1.5 * y[:, None].float()
    return autotune.Data(train=(x[:240], y[:240]), test=(x[240:], y[240:]))


def build(params, info):
    return nn.Sequential(nn.Linear(info.input_shape[0], params["hidden"]), nn.ReLU(),
                         nn.Linear(params["hidden"], info.n_outputs))


if __name__ == "__main__":
    url = sys.argv[1]
    workers = int(sys.argv[2])
    if sys.argv[3] == "lambda":
        autotune.tune(name="bad", data=load, model=lambda params, info: None, storage=url)
    study = autotune.tune(name="scripted", data=load, model=build, loss="hinge",
                          space={"hidden": {"choices": [4, 16]},
                                 "lr": {"low": 1e-3, "high": 0.1, "log": True}},
                          n_trials=4, max_epochs=2, storage=url, workers=workers)
    # finished trials: with 2 workers one may also have claimed a surplus trial, failed
    # unrun ("1 surplus, not run"), so the number of trials is 4 or 5
    print("RESULT", type(study).__name__, study.study_name,
          sum(t.state.name == "COMPLETE" for t in study.trials))
'''


def run_script(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "user_tune.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_tune_runs_a_script_s_own_functions_on_two_workers_and_returns_the_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'api.db'}"
    result = run_script(tmp_path, url, "2", "ok")
    assert result.returncode == 0, result.stderr
    assert "RESULT Study scripted 4" in result.stdout
    study = optuna.load_study(study_name="scripted", storage=url)
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 4
    assert study.user_attrs["autotune:definition"]["model"].endswith("user_tune.py:build")
    before = len(study.trials)  # 4, or 5 with a surplus trial failed unrun
    resumed = run_script(tmp_path, url, "1", "ok")  # the same call again resumes: no new trial
    assert resumed.returncode == 0, resumed.stderr
    assert "RESULT Study scripted 4" in resumed.stdout
    assert len(optuna.load_study(study_name="scripted", storage=url).trials) == before


def test_tune_refuses_a_lambda_saying_to_move_it_to_module_level(tmp_path):
    result = run_script(tmp_path, f"sqlite:///{tmp_path / 'api.db'}", "1", "lambda")
    assert result.returncode == 1
    assert "is a lambda, a nested function or a method" in result.stderr
    assert "move it to the module's top level" in result.stderr
    assert not (tmp_path / "api.db").exists()


def test_tune_runs_a_study_file_and_overrides_its_budget(tmp_path):
    url = f"sqlite:///{tmp_path / 'file.db'}"
    code = ("import autotune, sys; s = autotune.tune('digits', n_trials=2, max_epochs=1, "
            "storage=sys.argv[1]); print(s.study_name, len(s.trials))")
    result = subprocess.run([sys.executable, "-c", code, url], cwd=tmp_path, text=True,
                            capture_output=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "digits 2"
