"""--tensorboard DIR: event files per trial, read back with TensorBoard's own
EventAccumulator (scalars per epoch, hparams), from two workers and from a train function."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests.small_study import chromium, screenshot
from tests.test_dashboard import free_port
from tests.test_function import write as write_train_study
from tests.test_plugins import run, run_without


def read(folder: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return accumulator


def hparams(accumulator: EventAccumulator) -> tuple[dict[str, object], dict[str, float]]:
    """(hparams of the session, the final metric values) as TensorBoard's HParams tab reads
    them from the folder's events."""
    content = accumulator.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info
    values = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
              for k, v in start.hparams.items()}
    finals = {tag: accumulator.Scalars(tag)[-1].value for tag in accumulator.Tags()["scalars"]
              if tag.startswith("final/")}
    return values, finals


def test_every_trial_of_two_workers_writes_its_epochs_and_hparams(tmp_path):
    url = f"sqlite:///{tmp_path / 'tb.db'}"
    done = run("--study", "digits", "--storage", url, "--n-trials", "3", "--max-epochs", "3",
               "--workers", "2", "--tensorboard", "tb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="digits", storage=url)
    assert study.user_attrs["autotune:tensorboard"] == str(tmp_path / "tb" / "digits")
    assert f"tensorboard: tensorboard --logdir {tmp_path / 'tb' / 'digits'}" in done.stdout
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3
    for trial in finished:
        events = read(tmp_path / "tb" / "digits" / f"trial-{trial.number}")
        for tag in ("train_loss", "lr", "epoch_seconds", "val_accuracy"):
            assert [e.step for e in events.Scalars(tag)] == sorted(trial.intermediate_values)
        assert {e.step: e.value for e in events.Scalars("val_accuracy")} == pytest.approx(
            trial.intermediate_values)
        params, finals = hparams(events)
        assert params["state"] == trial.state.name.lower()
        assert params["lr"] == pytest.approx(trial.params["lr"])
        expected = trial.value if trial.value is not None else \
            trial.intermediate_values[max(trial.intermediate_values)]
        assert finals["final/val_accuracy"] == pytest.approx(expected)


def test_a_train_function_s_own_metrics_reach_tensorboard_from_the_study_file(tmp_path):
    study = Path(write_train_study(tmp_path / "project")).read_text()
    study_file = write_train_study(tmp_path / "project", study=study.replace(
        "seed = 2", 'seed = 2\ntensorboard = "runs"').replace("TRAIN", "train"))
    url = f"sqlite:///{tmp_path / 'f.db'}"
    done = run("--study", str(study_file), "--storage", url, "--n-trials", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    first = optuna.load_study(study_name="loop", storage=url).trials[0]
    events = read(tmp_path / "project" / "runs" / "loop" / "trial-0")
    assert [e.value for e in events.Scalars("lr")] == pytest.approx([first.params["lr"]] * 4)
    assert [e.step for e in events.Scalars("val_accuracy")] == [1, 2, 3, 4]
    params, finals = hparams(events)
    assert params["state"] == "complete" and finals["final/val_accuracy"] == first.value


def test_without_tensorboard_installed_the_flag_is_refused_in_one_line(tmp_path):
    done = run_without("tensorboard", "--study", "digits", "--storage",
                       f"sqlite:///{tmp_path / 'n.db'}", "--tensorboard", "tb", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: --tensorboard needs TensorBoard: pip install "
                                   "'autotune[tensorboard]' (or pip install tensorboard)")
    assert not (tmp_path / "tb").exists() and not (tmp_path / "n.db").exists()


def test_tensorboard_serves_the_study_s_trials_and_draws_their_scalars_in_chromium(tmp_path):
    url = f"sqlite:///{tmp_path / 'tb.db'}"
    done = run("--study", "digits", "--storage", url, "--n-trials", "4", "--max-epochs", "4",
               "--pruner", "none", "--tensorboard", "tb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    port = free_port()
    logs = (tmp_path / "tensorboard.out").open("w")
    server = subprocess.Popen(  # stopped by its own pid below
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path / "tb" / "digits"),
         "--host", "127.0.0.1", "--port", str(port)], stdout=logs, stderr=subprocess.STDOUT)
    try:
        runs = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not runs:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs",
                                            timeout=2) as response:
                    runs = json.loads(response.read())
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.3)
        assert sorted(runs or []) == ["trial-0", "trial-1", "trial-2", "trial-3"], runs
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?"
                                    "run=trial-0&tag=val_accuracy", timeout=10) as response:
            points = json.loads(response.read())  # [wall time, step, value] per epoch
        assert [step for _, step, _ in points] == [1, 2, 3, 4]
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 760})
            page.goto(f"http://127.0.0.1:{port}/?smoothing=0#timeseries",
                      wait_until="networkidle")
            page.wait_for_selector("text=val_accuracy", timeout=30_000)
            page.fill("input[placeholder='Filter tags (regex)']", "^(val_accuracy|train_loss)$")
            close = page.locator("button[aria-label='Close side pane']")
            if close.count():
                close.first.click()
            page.wait_for_timeout(2000)  # the charts draw after their data arrives
            shot = screenshot(page, "tensorboard-scalars.png")
        assert shot.stat().st_size > 20_000  # a page with charts, not a blank one
        if os.environ.get("AUTOTUNE_SCREENSHOT_DIR"):  # README's image, refreshed on demand
            shutil.copy(shot, Path(os.environ["AUTOTUNE_SCREENSHOT_DIR"]))
    finally:
        server.terminate()
        server.wait(timeout=10)
        logs.close()
