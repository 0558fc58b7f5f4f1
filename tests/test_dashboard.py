"""`python -m autotune.dashboard`: the real optuna-dashboard, seen through a real Chromium."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound

from autotune.cli import _dashboard as dashboard
from autotune.search._study import ARTIFACT_DIR_ATTR
from autotune.training._artifacts import LEARNING_CURVE, WEIGHTS
from tests.conftest import REPO, _skip_or_fail
from tests.small_study import (
    Console,
    SmallStudy,
    chromium,
    run_module,
    screenshot,
    small_study,
)

START_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> SmallStudy:
    return small_study(tmp_path_factory)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """A dashboard process of ours; stopped by its own pid."""

    def __init__(self, url: str, port: int, logs: Path, *extra: str) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.stdout, self.stderr = logs / "dashboard.out", logs / "dashboard.err"
        with self.stdout.open("w") as out, self.stderr.open("w") as err:
            # files, not pipes: the server logs every request and must never block on a full pipe
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "autotune.dashboard", "--storage", url,
                 "--port", str(port), *extra], cwd=REPO, stdout=out, stderr=err)

    def wait_until_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"dashboard exited with {self.proc.returncode}: "
                                     f"{self.stderr.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.base}/api/meta", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        raise AssertionError(f"dashboard not answering after {START_TIMEOUT_S} s: "
                             f"{self.stderr.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def served(study: SmallStudy, tmp_path: Path) -> Iterator[Served]:
    server = Served(study.url, free_port(), tmp_path)
    try:
        server.wait_until_up()
        yield server
    finally:
        server.stop()


def test_dashboard_shows_the_study_its_trials_plots_note_and_artifacts_in_chromium(
        study: SmallStudy, served: Served, browser: Any) -> None:
    stored = study.load()
    best = stored.best_trial
    study_id = stored._study_id
    assert f"open http://127.0.0.1:{served.port}/dashboard" in served.stdout.read_text()
    assert f"artifacts: {stored.user_attrs[ARTIFACT_DIR_ATTR]}" in served.stderr.read_text()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    console = Console(page)

    page.goto(f"{served.base}/dashboard")
    page.get_by_text(f"{study_id}. {study.name}", exact=True).wait_for()  # the list's card
    assert "Direction: MAXIMIZE" in page.inner_text("body")
    screenshot(page, "dashboard-studies.png")

    page.goto(f"{served.base}/dashboard/studies/{study_id}")
    page.wait_for_selector(".js-plotly-plot .main-svg")  # plotly drew the history plot
    page.get_by_text("Best Trial (number").wait_for()
    body = page.inner_text("body")
    assert study.name in body and "History" in body and "Intermediate values" in body
    assert f"Best Trial (number={best.number})" in body
    assert page.locator(".js-plotly-plot").count() >= 3
    screenshot(page, "dashboard-study.png", full_page=True)

    page.goto(f"{served.base}/dashboard/studies/{study_id}/trials?numbers={best.number}")
    page.get_by_text(LEARNING_CURVE).first.wait_for()
    for trial in stored.trials:  # every trial is listed, the best one opened
        assert page.get_by_text(f"Trial {trial.number}", exact=True).count() >= 1
    body = page.inner_text("body")
    assert WEIGHTS in body and "epochs_run" in body and "seed" in body
    page.get_by_text("Artifacts", exact=True).first.scroll_into_view_if_needed()
    screenshot(page, "dashboard-trial.png")

    # the artifact the card links to comes from the study's artifact store, byte for byte
    store = optuna.storages.RDBStorage(study.url)
    metas = {m.filename: m for m in optuna.artifacts.get_all_artifact_meta(best, storage=store)}
    curve = page.request.get(f"{served.base}/artifacts/{study_id}/{best._trial_id}/"
                             f"{metas[LEARNING_CURVE].artifact_id}")
    assert curve.ok
    epochs = json.loads(curve.body())
    assert [e["epoch"] for e in epochs] == sorted(best.intermediate_values)
    assert [e["value"] for e in epochs] == list(best.intermediate_values.values())

    page.goto(f"{served.base}/dashboard/studies/{study_id}/note")
    page.get_by_text("Test accuracy", exact=False).first.wait_for()
    body = page.inner_text("body")
    assert f"Best trial: #{best.number}" in body and f"{best.value:.4f}" in body
    screenshot(page, "dashboard-note.png")
    page.close()
    assert console.errors == []


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_dashboard_warns_that_other_hosts_have_no_authentication(
        study: SmallStudy, tmp_path: Path) -> None:
    # 0.0.0.0 inside a private network namespace (only its own loopback): the real listen on
    # every address, with nothing exposed outside the test.
    if not shutil.which("unshare") or os.geteuid() != 0:
        _skip_or_fail("a private network namespace needs root and unshare (util-linux)")
    err_path = tmp_path / "dashboard.err"
    with err_path.open("w") as err:
        proc = subprocess.Popen(["unshare", "--net", sys.executable, "-m", "autotune.dashboard",
                                 "--storage", study.url, "--host", "0.0.0.0", "--port", "8080"],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Listening on" not in err_path.read_text() and time.monotonic() < deadline:
            if proc.poll() is not None:
                _skip_or_fail(f"cannot run in a private network namespace: "
                              f"{err_path.read_text().strip()}")
            time.sleep(0.2)
        first = err_path.read_text().splitlines()[0]
        assert first.startswith("warning: listening on 0.0.0.0: optuna-dashboard has no "
                                "authentication")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.stdout is not None
    assert f"open http://{socket.gethostname()}:8080/dashboard/" in proc.stdout.read()
    assert all(map(dashboard._is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "localhost"]))


def test_dashboard_refuses_a_host_it_cannot_listen_on(
        study: SmallStudy, capsys: pytest.CaptureFixture[str]) -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine
    assert dashboard.main(["--storage", study.url, "--host", "192.0.2.1"]) == 2
    assert one_error_line(capsys) == ("error: cannot listen on 192.0.2.1:8080: Cannot assign "
                                      "requested address")


def test_dashboard_refuses_a_port_in_use(study: SmallStudy,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert dashboard.main(["--storage", study.url, "--port", str(port)]) == 2
    assert one_error_line(capsys) == (f"error: port {port} on 127.0.0.1 is in use; pass "
                                      "another --port")


@pytest.mark.parametrize(("storage_url", "message"), [
    ("studies.db", "is not a URL; pass 'sqlite:///studies.db'"),
    ("sqlite:////nonexistent/dir/x.db", "does not exist"),
    ("nosuchdb://host/db", "unsupported database"),
])
def test_dashboard_rejects_a_bad_storage_with_one_line(
        storage_url: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert dashboard.main(["--storage", storage_url]) == 2
    assert message in one_error_line(capsys)


def test_dashboard_command_exits_2_with_one_line_for_a_missing_storage_file(
        tmp_path: Path) -> None:
    done = run_module("autotune.dashboard", "--storage", f"sqlite:///{tmp_path / 'none.db'}",
                      timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: storage 'sqlite:///{tmp_path / 'none.db'}': file '{tmp_path / 'none.db'}' "
        "does not exist; pass the --storage URL the study was run with"]
    assert not (tmp_path / "none.db").exists()  # looking never creates a storage


def test_dashboard_help_explains_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        dashboard.main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--storage", "--host", "--port", "--artifacts", "127.0.0.1", "8080",
                 "no authentication"):
        assert flag in text


def test_artifact_dirs_read_from_every_folder_and_write_to_the_first(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    FileSystemArtifactStore(str(second)).write("id-2", io.BytesIO(b"second"))
    both = dashboard.ArtifactDirs([first, second])
    assert both.open_reader("id-2").read() == b"second"
    both.write("id-1", io.BytesIO(b"first"))
    assert (first / "id-1").read_bytes() == b"first"
    both.remove("id-2")
    with pytest.raises(ArtifactNotFound):
        both.open_reader("id-2")
