"""`python -m autotune.export`: the best trial as a study file that loads, retrains exactly the
best configuration, and runs as a one-trial study."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import optuna
import pytest
import torch

from autotune.cli import _export as export
from autotune.search._objective import trial_seed
from autotune.search._study import SPEC_TEXT_ATTR, TEST_RESULT_ATTR
from autotune.spec import _space as space
from autotune.spec._spec import StudySpec, load_spec, parse_spec
from autotune.training._data import load_splits
from autotune.training._fit import fit
from autotune.training._models import build_model
from tests.small_study import SmallStudy, run_module, small_study

# A run of the exported file trains with its own seed (see export.header): its accuracy is
# the best trial's up to the spread between seeds, which on digits in 3 epochs stays within
# a few points. Exact reproduction is checked separately, with the trial's own seed.
SEED_SPREAD = 0.1


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> SmallStudy:
    return small_study(tmp_path_factory)


@pytest.fixture(scope="module")
def exported(study: SmallStudy, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "best.toml"
    done = run_module("autotune.export", "--study", study.name, "--storage", study.url,
                      "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {out}: trial #")
    return out


def best_val_accuracy(spec: StudySpec, seed: int) -> float:
    """Train the spec's one configuration, as a trial of it would, on CPU."""
    splits = load_splits(spec.dataset, data_dir=None, val_fraction=spec.val_fraction,
                         split_seed=spec.split_seed, device=torch.device("cpu"))
    cfg = space.to_config(spec, {}, seed=seed)
    model = build_model(cfg, splits.input_shape, splits.n_outputs)
    return fit(model, splits.x_train, splits.y_train, splits.x_val, splits.y_val,
               cfg).best_value


def test_exported_toml_loads_with_every_searched_param_fixed_at_its_best_value(
        study: SmallStudy, exported: Path) -> None:
    original, spec = load_spec(str(study.study_file)), load_spec(str(exported))
    best = study.load().best_trial
    assert spec.space == ()
    assert spec.fixed == {**original.fixed, **best.params}
    assert spec.name == f"{study.name}-best" and spec.n_trials == 1 and spec.pruner == "none"
    for kept in ("dataset", "model", "seed", "val_fraction", "split_seed", "max_epochs",
                 "sampler", "sampler_options"):
        assert getattr(spec, kept) == getattr(original, kept), kept
    assert f"torch seed {best.user_attrs['seed']}" in exported.read_text()


def test_exported_configuration_retrains_the_best_trial_exactly(study: SmallStudy,
                                                                 exported: Path) -> None:
    best = study.load().best_trial
    value = best_val_accuracy(load_spec(str(exported)), seed=int(best.user_attrs["seed"]))
    assert value == pytest.approx(best.value, abs=1e-9)


def test_exported_study_file_runs_as_a_one_trial_study(study: SmallStudy, exported: Path,
                                                       tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'retrain.db'}"
    done = run_module("autotune.run", "--study", str(exported), "--n-trials", "1",
                      "--storage", url, timeout=300)
    assert done.returncode == 0, done.stderr
    spec = load_spec(str(exported))
    retrained = optuna.load_study(study_name=spec.name, storage=url)
    (trial,) = retrained.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.params == {}
    assert "best params: none searched (every setting is fixed)" in done.stdout.splitlines()
    # the run trained exactly the exported configuration, with the seed its trial 0 gets
    assert trial.user_attrs["seed"] == trial_seed(spec, 0)
    assert trial.value == pytest.approx(best_val_accuracy(spec, trial_seed(spec, 0)), abs=1e-9)
    best = study.load().best_trial
    assert abs(trial.value - best.value) <= SEED_SPREAD
    config = retrained.user_attrs[TEST_RESULT_ATTR]["config"]
    assert {k: config[k] for k in best.params} == best.params


def test_export_json_holds_params_fixed_and_a_loadable_study_file(study: SmallStudy,
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "best.json"
    done = run_module("autotune.export", "--study", study.name, "--storage", study.url,
                      "--out", str(out))
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    best = study.load().best_trial
    assert data["params"] == best.params and data["trial"] == best.number
    assert data["value"] == best.value and data["seed"] == best.user_attrs["seed"]
    assert data["fixed"] == {**load_spec(str(study.study_file)).fixed, **best.params}
    spec = parse_spec(tomllib.loads(data["study_file"]), path="best.toml")
    assert spec.fixed == data["fixed"] and spec.space == ()


def test_export_rejects_an_unknown_study_listing_the_stored_ones(
        study: SmallStudy, tmp_path: Path) -> None:
    done = run_module("autotune.export", "--study", "nope", "--storage", study.url,
                      "--out", str(tmp_path / "best.toml"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: unknown study 'nope' in {study.url}; available: {study.name}"]
    assert not (tmp_path / "best.toml").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--storage", "studies.db"], "is not a URL"),
    (["--storage", "sqlite:////nonexistent/x.db"], "does not exist"),
    (["--out", "best.yaml"], "must end in .toml (a study file) or .json"),
    (["--out", "/nonexistent/best.toml"], "folder '/nonexistent' does not exist"),
])
def test_export_rejects_bad_input_with_one_line(
        study: SmallStudy, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        args: list[str], message: str) -> None:
    argv = {"--study": study.name, "--storage": study.url, "--out": str(tmp_path / "b.toml")}
    argv.update(dict(zip(args[::2], args[1::2], strict=True)))
    assert export.main([x for pair in argv.items() for x in pair]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_export_refuses_a_study_without_a_complete_trial(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.create_study(study_name="empty", storage=url).set_user_attr(
        "autotune:definition", {"dataset": "digits"})
    assert export.main(["--study", "empty", "--storage", url,
                        "--out", str(tmp_path / "b.toml")]) == 2
    assert "has no complete trial yet" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "expected"), [
    ('dataset = "digits"\nfinal_train = "train+val"\n', {"final_train": "train+val"}),
    ('dataset = "digits"\ntrial_weights = "all"\nfinal_train = "train"\n',
     {"final_train": "train", "trial_weights": "all"}),
    ('dataset = "digits"\n', {}),
])
def test_export_keeps_the_study_file_settings_outside_the_definition(
        text: str, expected: dict[str, str]) -> None:
    study = optuna.create_study()
    study.set_user_attr(SPEC_TEXT_ATTR, text)
    assert export.file_only_keys(study) == expected
