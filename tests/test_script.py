"""Your unchanged training script: `script = "train.py"`, run once per trial in its own
process group; what it reports (autotune.report lines or a report_regex) is pruned on,
a pruned trial's processes are killed; real processes and a real SQLite file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore

from autotune.search._study import ARTIFACT_DIR_ATTR
from tests.conftest import REPO
from tests.test_plugins import refused_with_storage_untouched, run

SCRIPT = '''
import argparse
import math
import os
import subprocess
import sys
import time

import autotune

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
parser.add_argument("--width", type=int, default=8)
parser.add_argument("--mode", default="ok")
args = parser.parse_args()
print(f"training with lr={args.lr} width={args.width} in {os.getcwd()}")
if args.mode == "crash":
    print("Traceback (most recent call last):", file=sys.stderr)
    print("RuntimeError: CUDA out of memory", file=sys.stderr)
    sys.exit(3)
if args.mode == "other":
    autotune.report(epoch=1, train_loss=0.5)
    sys.exit(0)
if args.mode == "silent":
    sys.exit(0)
score = 1.0 - abs(math.log10(args.lr) + 1.0) / 4  # best at lr = 0.1
if score < 0.5:  # a poor one: a child that would outlive it, then a long wait
    child = subprocess.Popen(["sleep", "300"])
    with open(f"child-{os.environ['AUTOTUNE_TRIAL_NUMBER']}.pid", "w") as f:
        f.write(str(child.pid))
for epoch in range(1, int(os.environ["AUTOTUNE_MAX_EPOCHS"]) + 1):
    autotune.report(epoch=epoch, val_accuracy=score * epoch / 3, train_loss=1 - score)
    if score < 0.5:
        time.sleep(float(os.environ.get("POOR_SLEEP", "60")))
'''

STUDY = '''
name = "scripted"
script = "code/train.py"
seed = 1
[budget]
n_trials = 5
max_epochs = 3
[sampler]
name = "random"
[pruner]
name = "median"
n_startup_trials = 2
n_warmup_steps = 0
[fixed]
width = 16
[space]
lr = { low = 1e-4, high = 1.0, log = true }
'''


def write(folder: Path, study: str = STUDY, script: str = SCRIPT) -> Path:
    (folder / "code").mkdir(parents=True, exist_ok=True)
    (folder / "code" / "train.py").write_text(script)
    path = folder / "study.toml"
    path.write_text(study)
    return path


def output_of(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    (meta,) = [m for m in optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)
               if m.filename == "script-output.txt"]
    store = FileSystemArtifactStore(study.user_attrs[ARTIFACT_DIR_ATTR])
    with store.open_reader(meta.artifact_id) as reader:
        return reader.read().decode()


def test_a_script_runs_per_trial_on_two_workers_and_reports_each_epoch(tmp_path):
    study_file = write(tmp_path / "project", STUDY.replace("n_trials = 5", "n_trials = 4")
                       + "[[start_from]]\nlr = 0.1\n[[start_from]]\nlr = 0.05\n")
    url = f"sqlite:///{tmp_path / 's.db'}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run("--study", str(study_file), "--storage", url, "--workers", "2", "--pruner",
               "none", cwd=elsewhere, timeout=600, env={"POOR_SLEEP": "0"})
    assert done.returncode == 0, done.stderr
    assert "trains with your script code/train.py" in done.stderr
    study = optuna.load_study(study_name="scripted", storage=url)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 4
    first = study.trials[0]
    assert first.params == {"lr": 0.1} and first.value == pytest.approx(1.0)
    assert first.intermediate_values == pytest.approx({1: 1 / 3, 2: 2 / 3, 3: 1.0})
    assert first.user_attrs["trained_on"] == "your script code/train.py"
    assert first.user_attrs["command"].endswith("code/train.py --width 16 --lr 0.1")
    output = output_of(study, first)
    # run in the study file's folder, with its params on the command line
    assert f"training with lr=0.1 width=16 in {tmp_path / 'project'}" in output
    assert output.count("@autotune.report ") == 3


def test_a_pruned_script_s_process_group_is_killed(tmp_path):
    study_file = write(tmp_path / "project", STUDY + "[[start_from]]\nlr = 0.1\n"
                       "[[start_from]]\nlr = 0.2\n[[start_from]]\nlr = 0.0001\n")
    url = f"sqlite:///{tmp_path / 'p.db'}"
    started = time.monotonic()
    done = run("--study", str(study_file), "--storage", url, "--n-trials", "3",
               cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 50  # the poor trial's 60 s sleeps were cut short
    study = optuna.load_study(study_name="scripted", storage=url)
    poor = study.trials[2]
    assert poor.state.name == "PRUNED" and list(poor.intermediate_values) == [1]
    assert poor.user_attrs["prune_reason"]
    child = int((tmp_path / "project" / "child-2.pid").read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and alive(child):
        time.sleep(0.1)
    assert not alive(child), "the script's child outlived the pruned trial"


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie waiting to be reaped does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


PYTORCH_EXAMPLE = '''
import argparse

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float)
parser.add_argument("--epochs", type=int)
args = parser.parse_args()
for epoch in range(1, args.epochs + 1):
    correct = min(10000, int(9000 + 1000 * args.lr * epoch))
    print(f"Train Epoch: {epoch} [0/60000 (0%)]\\tLoss: 2.3")
    print(f"\\nTest set: Average loss: 0.0300, Accuracy: {correct}/10000 "
          f"({100. * correct / 10000:.0f}%)\\n")
'''


def test_a_script_that_knows_nothing_of_autotune_reports_through_a_regex(tmp_path):
    study = STUDY.replace('seed = 1', 'seed = 1\nmetric = "test_correct"\n'
                          'direction = "maximize"\nargs = "--lr {lr} --epochs {max_epochs}"\n'
                          r'report_regex = "Accuracy: (\\d+)/10000"')
    study = study.replace("[fixed]\nwidth = 16\n", "").replace("high = 1.0", "high = 0.9")
    study_file = write(tmp_path / "project", study + "[[start_from]]\nlr = 0.5\n",
                       PYTORCH_EXAMPLE)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    done = run("--study", str(study_file), "--storage", url, "--n-trials", "2",
               "--pruner", "none", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    study_ = optuna.load_study(study_name="scripted", storage=url)
    first = study_.trials[0]
    assert first.intermediate_values == {1: 9500.0, 2: 10000.0, 3: 10000.0}
    assert first.value == 10000.0 and study_.metric_names == ["test_correct"]
    assert first.user_attrs["command"].endswith("code/train.py --lr 0.5 --epochs 3")


@pytest.mark.parametrize("mode, reason", [
    ("crash", "the script exited with code 3: RuntimeError: CUDA out of memory"),
    ("silent", "the script reported nothing: call autotune.report(epoch=..., "
               "val_accuracy=...) each epoch, or set report_regex in the study file"),
    ("other", "the script reported train_loss but not 'val_accuracy', the study's metric"),
])
def test_a_failing_or_silent_script_fails_its_trial_with_the_reason(tmp_path, mode, reason):
    study_file = write(tmp_path / "project", STUDY.replace("width = 16", f'mode = "{mode}"'))
    url = f"sqlite:///{tmp_path / 'f.db'}"
    # every trial fails alike: a second of them is enough (not the 10 in a row that end a run)
    done = run("--study", str(study_file), "--storage", url, "--n-trials", "1", "--timeout",
               "1", cwd=tmp_path)
    study = optuna.load_study(study_name="scripted", storage=url)
    assert len(study.trials) >= 1 and study.trials[0].state.name == "FAIL"
    assert study.trials[0].user_attrs["fail_reason"] == reason
    assert f"trial   0 FAIL     {reason}" in done.stderr
    if mode == "crash":
        assert "Traceback (most recent call last):" in study.trials[0].user_attrs["traceback"]
        assert "RuntimeError: CUDA out of memory" in output_of(study, study.trials[0])


@pytest.mark.parametrize("edit, message", [
    (('script = "code/train.py"', 'script = "code/nope.py"'), "does not exist (the script's "
     "path is relative to the study file)"),
    (('seed = 1', 'seed = 1\nreport_regex = "Accuracy: [0-9]+"'),
     "report_regex: needs a group around the value, e.g. 'Accuracy: ([0-9.]+)'"),
    (('seed = 1', 'seed = 1\nreport_regex = "Epoch (?P<epoch>[0-9]+) acc ([0-9.]+)"'),
     "report_regex: with an epoch group, name the value's too, e.g. 'Epoch "
     "(?P<epoch>[0-9]+) .* acc (?P<value>[0-9.]+)'"),
    (('seed = 1', 'seed = 1\nreport_regex = "Accuracy: ([0-9]+"'),
     "report_regex: not a valid regular expression: missing ), unterminated subpattern at "
     "position 10"),
    (('seed = 1', 'seed = 1\nargs = "--lr {lr} --depth {depth}"'),
     "args: {depth} is not a param; allowed: lr, width, max_epochs, trial_number, seed, "
     "device, checkpoint_dir"),
    (('seed = 1', 'seed = 1\ntrain = "code/train.py:main"'),
     "script: give train (a function) or script (a file), not both"),
    (('seed = 1', 'seed = 1\nmodel = "cnn"'),
     "model: is for autotune's own training; a study whose script trains loads its own data "
     "and builds its own model: remove it"),
])
def test_a_bad_script_study_is_refused_in_one_line_with_storage_untouched(tmp_path, edit,
                                                                          message):
    study_file = write(tmp_path / "project", STUDY.replace(*edit))
    line = refused_with_storage_untouched(study_file, tmp_path)
    assert line.startswith(f"error: {study_file}: ") and line.endswith(message), line


def test_a_study_without_a_script_refuses_its_args(tmp_path):
    study_file = tmp_path / "d.toml"
    study_file.write_text('dataset = "digits"\nargs = "--lr {lr}"\n')
    line = refused_with_storage_untouched(study_file, tmp_path)
    assert line.endswith('args: only a study with script = "train.py" takes it')


def test_the_script_s_environment_names_the_trial(tmp_path):
    script = ('import os, autotune\n'
              'autotune.report(epoch=int(os.environ["AUTOTUNE_MAX_EPOCHS"]), val_accuracy='
              'int(os.environ["AUTOTUNE_TRIAL_NUMBER"]) + int(os.environ["AUTOTUNE_SEED"]))\n')
    study_file = write(tmp_path / "project", STUDY, script)
    url = f"sqlite:///{tmp_path / 'e.db'}"
    done = run("--study", str(study_file), "--storage", url, "--n-trials", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    trial = optuna.load_study(study_name="scripted", storage=url).trials[0]
    assert trial.intermediate_values == {3: float(trial.user_attrs["seed"])}
    assert os.environ.get("AUTOTUNE_TRIAL_NUMBER") is None  # set for the script only


def test_an_exported_script_study_names_its_script_from_the_new_folder_and_retrains(tmp_path):
    study_file = write(tmp_path / "project", STUDY + "[[start_from]]\nlr = 0.05\n")
    url = f"sqlite:///{tmp_path / 'x.db'}"
    done = run("--study", str(study_file), "--storage", url, "--n-trials", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (tmp_path / "out").mkdir()
    exported = subprocess.run(
        [sys.executable, "-m", "autotune.export", "--study", "scripted", "--storage", url,
         "--out", str(tmp_path / "out" / "best.toml")], cwd=tmp_path, capture_output=True,
        text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert exported.returncode == 0, exported.stderr
    text = (tmp_path / "out" / "best.toml").read_text()
    assert 'script = "../project/code/train.py"' in text and "lr = 0.05" in text
    again = run("--study", str(tmp_path / "out" / "best.toml"), "--storage", url,
                cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    best = optuna.load_study(study_name="scripted-best", storage=url).best_trial
    assert best.value == optuna.load_study(study_name="scripted", storage=url).best_value


def test_the_script_example_runs_as_the_readme_says(tmp_path):
    url = f"sqlite:///{tmp_path / 'example.db'}"
    result = run("--study", str(REPO / "examples" / "script" / "study.toml"), "--storage",
                 url, "--n-trials", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "study script: 1 finished trials" in result.stdout
    trial = optuna.load_study(study_name="script", storage=url).trials[0]
    assert sorted(trial.intermediate_values) == list(range(1, 9))  # read off its printed lines
    assert 50 < trial.value <= 100  # a percentage, as the script prints it


# a script that keeps its own checkpoint in $AUTOTUNE_CHECKPOINT_DIR (also given to it as
# {checkpoint_dir}) and resumes from what it finds there; trial $KILL's worker is killed after
# epoch 2's checkpoint
RESUMING = '''
import argparse
import json
import os
import signal
import time

import autotune

parser = argparse.ArgumentParser()
parser.add_argument("--ckpt", required=True)
parser.add_argument("--x", type=float, required=True)
args = parser.parse_args()
assert args.ckpt == os.environ["AUTOTUNE_CHECKPOINT_DIR"] and os.path.isdir(args.ckpt)
saved = os.path.join(args.ckpt, "state.json")
state = {"epoch": 0, "total": 0.0}
if os.path.exists(saved):
    with open(saved) as f:
        state = json.load(f)
print(f"starting at epoch {state['epoch'] + 1}")
for epoch in range(state["epoch"] + 1, int(os.environ["AUTOTUNE_MAX_EPOCHS"]) + 1):
    time.sleep(float(os.environ.get("EPOCH_S", "0.2")))
    state = {"epoch": epoch, "total": state["total"] + args.x}
    autotune.report(epoch=epoch, score=state["total"])
    with open(saved + ".tmp", "w") as f:
        json.dump(state, f)
    os.replace(saved + ".tmp", saved)
    if epoch == 2 and os.environ["AUTOTUNE_TRIAL_NUMBER"] == os.environ.get("KILL", "-"):
        time.sleep(1.0)  # the worker has recorded epoch 2's report
        os.kill(os.getppid(), signal.SIGKILL)  # the worker dies mid-trial, and this with it
        os.kill(os.getpid(), signal.SIGKILL)
'''

RESUMING_STUDY = '''
name = "resumed-script"
script = "code/train.py"
args = "--ckpt {checkpoint_dir} --x {x}"
metric = "score"
direction = "maximize"
[budget]
n_trials = 2
max_epochs = 4
[sampler]
name = "random"
[pruner]
name = "none"
[space]
x = { low = 0.1, high = 1.0 }
'''


def test_a_killed_worker_s_script_trial_resumes_from_its_checkpoint_folder(tmp_path):
    study_file = write(tmp_path / "project", RESUMING_STUDY, RESUMING)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    done = run("--study", str(study_file), "--storage", url, "--workers", "2", cwd=tmp_path,
               env={"AUTOTUNE_HEARTBEAT_S": "1", "AUTOTUNE_GRACE_S": "3", "KILL": "0"})
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="resumed-script", storage=url)
    dead = study.trials[0]
    assert dead.state.name == "FAIL", dead.user_attrs
    assert "stopped sending heartbeats" in dead.user_attrs["fail_reason"]
    retry = next(t for t in study.trials if 0 in t.system_attrs.get("retry_history", []))
    assert retry.state.name == "COMPLETE", retry.user_attrs
    x = dead.params["x"]
    assert retry.params == {"x": x}
    assert "starting at epoch 3" in output_of(study, retry)  # it found epoch 2's checkpoint
    assert retry.user_attrs["resumed_from"] == {"trial": 0, "epoch": 2}
    # the dead trial's epochs carry on in the retry's curve, then its own
    assert retry.intermediate_values == pytest.approx({1: x, 2: 2 * x, 3: 3 * x, 4: 4 * x})
    assert retry.value == pytest.approx(4 * x)
    assert retry.user_attrs["epochs_run"] == 4
    folders = Path(study.user_attrs[ARTIFACT_DIR_ATTR]) / "script-checkpoints"
    assert f"--ckpt {folders / f'resumed-script-{retry.number}'} " in retry.user_attrs["command"]
    assert folders.is_dir() and not list(folders.iterdir())  # each removed when its trial ended
    assert not [t for t in study.trials if t.state.name in ("RUNNING", "WAITING")]


def test_an_interrupted_script_trial_keeps_its_folder_and_the_next_run_resumes_it(tmp_path):
    study_file = write(tmp_path / "project", RESUMING_STUDY.replace("n_trials = 2",
                                                                    "n_trials = 1"), RESUMING)
    url = f"sqlite:///{tmp_path / 'i.db'}"
    where = ["--storage", url, "--artifacts", str(tmp_path / "art")]
    saved = tmp_path / "art" / "script-checkpoints" / "resumed-script-0" / "state.json"
    driver = subprocess.Popen(
        [sys.executable, "-m", "autotune.run", "--study", str(study_file), *where],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "EPOCH_S": "1.0"})
    try:
        deadline = time.monotonic() + 60
        while not (saved.exists() and '"epoch": 2' in saved.read_text()):
            assert time.monotonic() < deadline and driver.poll() is None, driver.stderr.read()
            time.sleep(0.05)
        driver.send_signal(signal.SIGINT)
        _, err = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 130, err
    assert json.loads(saved.read_text())["epoch"] in (2, 3)  # kept for the retry
    again = run("--study", str(study_file), *where, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "requeued interrupted trial(s) 0" in again.stderr
    study = optuna.load_study(study_name="resumed-script", storage=url)
    retry = next(t for t in study.trials if 0 in t.system_attrs.get("retry_history", []))
    assert retry.state.name == "COMPLETE", retry.user_attrs
    resumed = retry.user_attrs["resumed_from"]
    assert resumed["trial"] == 0 and resumed["epoch"] in (2, 3)
    assert sorted(retry.intermediate_values) == [1, 2, 3, 4]
    assert not saved.parent.exists()  # the interrupted trial's folder became the retry's
