"""A real, seconds-long study on digits run once per test session, and a real headless
Chromium, for the tests of what people look at: dashboard, report and export."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest

from autotune.search._notes import write_study_note
from tests.conftest import REPO, _skip_or_fail, write_study

NAME = "viz"
# TPE with a fixed seed and deterministic CPU training: the same trials every session; lr wide
# enough that some trials lose and the median pruner cuts them.
STUDY = f"""
name = "{NAME}"
dataset = "digits"
model = "mlp"
seed = 7
val_fraction = 0.2
[budget]
n_trials = 6
max_epochs = 3
[sampler]
name = "tpe"
n_startup_trials = 3
[pruner]
name = "median"
n_startup_trials = 2
n_warmup_steps = 1
[fixed]
depth = 1
[space]
lr = {{ low = 1e-4, high = 0.3, log = true }}
optimizer = {{ choices = ["sgd", "adam"] }}
momentum = {{ low = 0.0, high = 0.9 }}
batch_size = {{ choices = [32, 64] }}
width = {{ low = 16, high = 64, log = true }}
"""
OUTPUT_DIR = REPO / "tests" / "output"  # screenshots, kept after the run (git-ignored)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@dataclass(frozen=True)
class SmallStudy:
    """Where the session's study lives."""

    name: str
    url: str
    study_file: Path
    root: Path

    def load(self) -> optuna.Study:
        return optuna.load_study(study_name=self.name, storage=self.url)


_cache: dict[str, SmallStudy] = {}


def small_study(factory: pytest.TempPathFactory) -> SmallStudy:
    """Run the study once per session (each test module asks for it) and note its best trial
    on the dashboard, as autotune.run does after its test evaluation."""
    if NAME not in _cache:
        root = factory.mktemp("small-study")
        study_file = write_study(root, STUDY, name=NAME)
        url = f"sqlite:///{root / 'studies.db'}"
        done = run_module("autotune.run", "--study", str(study_file), "--storage", url,
                          timeout=300)
        assert done.returncode == 0, done.stderr
        found = SmallStudy(NAME, url, study_file, root)
        write_study_note(found.load())
        _cache[NAME] = found
    return _cache[NAME]


def run_module(module: str, *args: str, timeout: float = 120
               ) -> subprocess.CompletedProcess[str]:
    """`python -m MODULE ARGS` from the repository root, as a user would type it."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ))


def chromium_path() -> str | None:
    return os.environ.get("AUTOTUNE_CHROMIUM") or shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Debian's package) driven by Playwright; skips, or fails under
    AUTOTUNE_REQUIRE_SERVICES=1, where there is none."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        _skip_or_fail("the playwright package is not installed (pip install -e '.[dev]')")
    path = chromium_path()
    if path is None:
        _skip_or_fail("Chromium not found (apt-get install chromium, or set AUTOTUNE_CHROMIUM)")
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        except Error as exc:
            _skip_or_fail(f"Chromium at {path} does not start: {str(exc).splitlines()[0]}")
        try:
            yield browser
        finally:
            browser.close()


class Console:
    """Collects a page's console errors and uncaught exceptions."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))


def screenshot(page: Any, name: str, *, full_page: bool = False) -> Path:
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUTPUT_DIR / name
    page.screenshot(path=str(path), full_page=full_page)
    return path
