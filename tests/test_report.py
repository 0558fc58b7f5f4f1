"""`python -m autotune.report`: the HTML report renders offline in Chromium; JSON and the
terminal table say what the study holds; small studies get notes instead of crashes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from autotune.cli import _report as report
from autotune.search._study import METRIC_NAME
from tests.small_study import Console, SmallStudy, chromium, run_module, screenshot, small_study

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> SmallStudy:
    return small_study(tmp_path_factory)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


def test_html_report_renders_every_plot_offline_in_chromium_without_errors(
        study: SmallStudy, tmp_path: Path, browser: Any) -> None:
    out = tmp_path / "report"
    done = run_module("autotune.report", "--study", study.name, "--storage", study.url,
                      "--out", str(out))
    assert done.returncode == 0, done.stderr
    for plot in report.PLOTS:
        image = out / f"{plot.name}.png"
        assert image.read_bytes()[:8] == PNG_MAGIC and image.stat().st_size > 10_000
    page_html = (out / report.HTML_NAME).read_text()
    assert 'src="http' not in page_html  # plotly.js is inlined, nothing is fetched
    assert "Objective Value" not in page_html  # every plot names the metric

    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    console = Console(page)
    fetched: list[str] = []
    # offline for real: any request beyond the file itself is refused and recorded
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(
        "file:") else (fetched.append(route.request.url), route.abort()))
    page.goto((out / report.HTML_NAME).as_uri())
    for plot in report.PLOTS:
        page.wait_for_selector(f"#{plot.name} .js-plotly-plot .main-svg")
    assert page.locator(".js-plotly-plot").count() == len(report.PLOTS)
    best = study.load().best_trial
    first_row = page.locator("#top-trials tbody tr").first.inner_text().split()
    assert first_row[:3] == [str(best.number), "complete", f"{best.value:.4f}"]
    assert METRIC_NAME in page.locator("#optimization_history").inner_text()
    screenshot(page, "report.png", full_page=True)
    page.close()
    assert console.errors == [] and fetched == []


def test_report_prints_a_summary_and_the_top_trials_and_writes_json(
        study: SmallStudy, tmp_path: Path) -> None:
    done = run_module("autotune.report", "--study", study.name, "--storage", study.url,
                      "--out", str(tmp_path), "--format", "json", "--top", "3")
    assert done.returncode == 0, done.stderr
    stored = study.load()
    best = stored.best_trial
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"study {study.name}: 6 finished trials")
    assert f"best trial: #{best.number} {METRIC_NAME}={best.value:.4f}" in lines[1]
    assert any(line.startswith("test accuracy of best configuration: ") for line in lines)
    title = lines.index(f"top 3 of {len(stored.trials)} trials:")
    assert lines[title + 1].split()[:3] == ["trial", "state", METRIC_NAME]
    rows = lines[title + 2:]
    assert len(rows) == 3 and rows[0].split()[:3] == [str(best.number), "complete",
                                                      f"{best.value:.4f}"]
    data = json.loads((tmp_path / report.JSON_NAME).read_text())
    assert data["study"] == study.name and data["metric"] == METRIC_NAME
    assert data["best_params"] == best.params and data["best"]["number"] == best.number
    assert data["test_result"]["trial"] == best.number
    assert [t["number"] for t in data["trials"]] == [t.number for t in stored.trials]
    for row, trial in zip(data["trials"], stored.trials, strict=True):
        assert row["state"] == trial.state.name.lower() and row["params"] == trial.params
        assert row["epochs"] == trial.user_attrs["epochs_run"]
        assert row["wall_time_s"] == trial.user_attrs["wall_time_s"]
    assert not (tmp_path / report.HTML_NAME).exists()


def test_report_on_a_minimising_study_made_outside_autotune_labels_its_value(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    plain = optuna.create_study(study_name="plain", storage=url, direction="minimize")
    plain.optimize(lambda t: (t.suggest_float("x", -1.0, 1.0) - 0.25) ** 2, n_trials=4)
    assert report.main(["--study", "plain", "--storage", url, "--out", str(tmp_path / "o"),
                        "--format", "json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == f"best trial: #{plain.best_trial.number} value={plain.best_value:.4f}"
    assert METRIC_NAME not in "\n".join(lines)
    assert json.loads((tmp_path / "o" / report.JSON_NAME).read_text())["metric"] == "value"


def tiny_study(url: str, n_complete: int) -> None:
    """A study with n_complete trials: too few for parameter importances."""
    study = optuna.create_study(study_name="tiny", storage=url, direction="maximize")
    for i in range(n_complete):
        trial = study.ask()
        trial.suggest_float("lr", 1e-3, 1.0, log=True)
        trial.report(0.5, 1)
        study.tell(trial, 0.5 + i / 10)


@pytest.mark.parametrize("n_complete", [0, 1])
def test_report_on_a_tiny_study_skips_what_it_cannot_draw_with_a_note(
        tmp_path: Path, n_complete: int, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'tiny.db'}"
    tiny_study(url, n_complete)
    out = tmp_path / "out"
    assert report.main(["--study", "tiny", "--storage", url, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "note: param_importances skipped:" in err
    assert not (out / "param_importances.png").exists()
    assert "Skipped: " in (out / report.HTML_NAME).read_text()
    drawn = {p.stem for p in out.glob("*.png")}
    assert drawn == (set() if n_complete == 0 else {"optimization_history", "slice",
                                                    "parallel_coordinate",
                                                    "intermediate_values"})


def test_report_rejects_an_unknown_study_listing_the_stored_ones(study: SmallStudy,
                                                                 tmp_path: Path) -> None:
    done = run_module("autotune.report", "--study", "nope", "--storage", study.url,
                      "--out", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: unknown study 'nope' in {study.url}; available: {study.name}"]


@pytest.mark.parametrize("storage_url", ["studies.db", "nosuchdb://host/db"])
def test_report_rejects_a_bad_storage_with_one_line(
        storage_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.main(["--study", "x", "--storage", storage_url, "--out", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: storage '{storage_url}'")


def test_report_help_explains_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        report.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--study", "--storage", "--out", "--format", "--top", "report.html",
                 "report.json"):
        assert flag in text
