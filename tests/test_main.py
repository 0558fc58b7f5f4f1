"""`autotune COMMAND ...`: the console command declared in pyproject, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from autotune.__main__ import COMMANDS

SCRIPT = Path(sys.executable).parent / "autotune"  # installed into the venv by pip


def autotune(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    if not SCRIPT.exists():
        pytest.fail(f"{SCRIPT} is missing: pip install -e . declares it ([project.scripts])")
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_help_lists_every_command(tmp_path):
    result = autotune("--help", cwd=tmp_path)
    assert result.returncode == 0
    for name in COMMANDS:
        assert f"  {name} " in result.stdout


def test_an_unknown_command_is_refused_in_one_line_naming_the_commands(tmp_path):
    result = autotune("stauts", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown command 'stauts'; available: run, status, dashboard, report, export, "
        "migrate, proxy (autotune --help)"]


def test_a_command_runs_with_its_own_flags_and_exit_code(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    study = optuna.create_study(study_name="there", storage=url, direction="minimize")
    study.add_trial(optuna.trial.create_trial(value=0.25))
    shown = autotune("status", "--storage", url, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert any(line.split()[:2] == ["there", "0.2500"] for line in shown.stdout.splitlines())
    refused = autotune("run", "--study", "nope", "--storage", url, cwd=tmp_path)
    assert refused.returncode == 2 and "unknown study 'nope'" in refused.stderr


def test_python_dash_m_autotune_is_the_same_entry(tmp_path):
    result = subprocess.run([sys.executable, "-m", "autotune", "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "commands:" in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_a_command_s_usage_names_it_as_the_user_typed_it(tmp_path, command):
    via_console = autotune(command, "--help", cwd=tmp_path)
    assert via_console.returncode == 0, via_console.stderr
    assert via_console.stdout.startswith(f"usage: autotune {command} ")
    via_module = subprocess.run([sys.executable, "-m", f"autotune.{command}", "--help"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert via_module.returncode == 0, via_module.stderr
    assert via_module.stdout.startswith(f"usage: python -m autotune.{command} ")
