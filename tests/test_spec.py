from __future__ import annotations

from pathlib import Path

import pytest

from autotune.errors import SpecError
from autotune.spec import SHIPPED_DIR, load_spec, shipped_names

MINIMAL = 'dataset = "digits"\n'


def with_space(entry: str) -> str:
    return MINIMAL + "[space]\n" + entry + "\n"


def load_text(tmp_path: Path, text: str):
    path = tmp_path / "s.toml"
    path.write_text(text)
    return load_spec(str(path))


def rejection(tmp_path: Path, text: str) -> str:
    with pytest.raises(SpecError) as info:
        load_text(tmp_path, text)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "s.toml") in message  # every error names the file
    return message


def test_every_shipped_study_file_validates():
    names = shipped_names()
    assert {"digits", "mnist", "fashion-mnist"} <= set(names)
    for name in names:
        spec = load_spec(name)
        assert spec.name == name
        assert {p.name for p in spec.space} >= {"lr", "momentum", "decay_rate", "batch_size",
                                                  "optimizer"}


def test_load_spec_accepts_a_path_and_defaults_the_name_to_the_file_stem(tmp_path):
    spec = load_text(tmp_path, MINIMAL)
    assert spec.name == "s"
    assert spec.sampler == "tpe" and spec.pruner == "median"
    assert spec.text == MINIMAL


def test_load_spec_reads_space_fixed_budget_and_algorithm_options(tmp_path):
    spec = load_text(tmp_path, """
dataset = "digits"
[budget]
n_trials = 7
max_epochs = 3
timeout_s = 60
[sampler]
name = "random"
[pruner]
name = "percentile"
percentile = 25.0
[fixed]
width = 32
[space]
lr = { low = 1e-3, high = 1.0, log = true }
batch_size = { choices = [16, 32] }
depth = { low = 1, high = 3 }
""")
    assert (spec.n_trials, spec.max_epochs, spec.timeout_s) == (7, 3, 60.0)
    assert spec.pruner_options == {"percentile": 25.0}
    assert spec.fixed == {"width": 32}
    params = {p.name: p for p in spec.space}
    assert params["lr"].log and params["lr"].low == 1e-3
    assert params["batch_size"].choices == (16, 32)
    assert (params["depth"].low, params["depth"].high) == (1, 3)


def test_load_spec_rejects_unknown_study_name_listing_available():
    with pytest.raises(SpecError, match=r"unknown study 'mnst'; available: .*digits.*mnist"):
        load_spec("mnst")


def test_load_spec_rejects_missing_file(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(str(tmp_path / "nope.toml"))


def test_load_spec_rejects_invalid_toml(tmp_path):
    assert "not valid TOML" in rejection(tmp_path, "dataset = \n")


def test_load_spec_rejects_unknown_top_level_key(tmp_path):
    message = rejection(tmp_path, MINIMAL + "epochs = 3\n")
    assert "epochs: unknown key; allowed:" in message and "budget" in message


def test_load_spec_rejects_unknown_budget_key(tmp_path):
    assert "budget.trials: unknown key" in rejection(tmp_path, MINIMAL + "[budget]\ntrials = 3\n")


def test_load_spec_rejects_missing_dataset(tmp_path):
    assert "dataset: is required; allowed: digits" in rejection(tmp_path, 'model = "mlp"\n')


def test_load_spec_rejects_unknown_dataset(tmp_path):
    message = rejection(tmp_path, 'dataset = "cifar"\n')
    assert "dataset: unknown value 'cifar'; allowed: digits, mnist, fashion-mnist" in message


def test_load_spec_rejects_wrong_type(tmp_path):
    message = rejection(tmp_path, MINIMAL + '[budget]\nn_trials = "ten"\n')
    assert "budget.n_trials: must be an integer, got 'ten'" in message


def test_load_spec_rejects_nonpositive_trial_count(tmp_path):
    assert ">= 1, got 0" in rejection(tmp_path, MINIMAL + "[budget]\nn_trials = 0\n")


def test_load_spec_rejects_val_fraction_outside_unit_interval(tmp_path):
    message = rejection(tmp_path, MINIMAL + "val_fraction = 1.5\n")
    assert "val_fraction: must be in (0, 1)" in message


def test_load_spec_rejects_unknown_sampler(tmp_path):
    message = rejection(tmp_path, MINIMAL + '[sampler]\nname = "bayes"\n')
    assert "sampler.name: unknown value 'bayes'; allowed: tpe, random, cmaes, gp, qmc" in message


def test_load_spec_rejects_unknown_pruner(tmp_path):
    message = rejection(tmp_path, MINIMAL + '[pruner]\nname = "asha"\n')
    assert "pruner.name: unknown value 'asha'; allowed:" in message and "hyperband" in message


def test_load_spec_rejects_unknown_sampler_option(tmp_path):
    message = rejection(tmp_path, MINIMAL + '[sampler]\nname = "tpe"\nstartup = 3\n')
    assert "sampler.startup: unknown option for sampler 'tpe'; allowed:" in message
    assert "n_startup_trials" in message


def test_load_spec_rejects_option_value_the_pruner_refuses(tmp_path):
    message = rejection(tmp_path, MINIMAL + '[pruner]\nname = "percentile"\npercentile = 150.0\n')
    assert "pruner 'percentile' rejects its options" in message


def test_load_spec_rejects_pruner_missing_required_option(tmp_path):
    assert "percentile" in rejection(tmp_path, MINIMAL + '[pruner]\nname = "percentile"\n')


def test_load_spec_rejects_unknown_hyperparameter(tmp_path):
    message = rejection(tmp_path, with_space("learning_rate = { low = 0.1, high = 1.0 }"))
    assert "space.learning_rate: unknown hyperparameter; allowed:" in message
    assert "lr" in message


def test_load_spec_rejects_unknown_key_in_a_parameter(tmp_path):
    message = rejection(tmp_path, with_space("lr = { low = 0.1, high = 1.0, scale = 2 }"))
    assert "space.lr.scale: unknown key; allowed: choices, high, log, low, step" in message


def test_load_spec_rejects_log_with_nonpositive_low(tmp_path):
    entry = "weight_decay = { low = 0.0, high = 0.1, log = true }"
    message = rejection(tmp_path, with_space(entry))
    assert "space.weight_decay.low: must be > 0 when log = true, got 0.0" in message


def test_load_spec_rejects_low_above_high(tmp_path):
    message = rejection(tmp_path, with_space("lr = { low = 0.5, high = 0.1 }"))
    assert "space.lr.low: must be <= high (0.1), got 0.5" in message


def test_load_spec_rejects_empty_choices(tmp_path):
    message = rejection(tmp_path, with_space("batch_size = { choices = [] }"))
    assert "space.batch_size.choices: must be a non-empty list, got []" in message


def test_load_spec_rejects_unknown_optimizer_choice(tmp_path):
    message = rejection(tmp_path, with_space('optimizer = { choices = ["sgd", "lion"] }'))
    allowed = "allowed: sgd, adam, adamw, rmsprop, nadam, adadelta"
    assert f"unknown optimizer 'lion'; {allowed}" in message


def test_load_spec_rejects_unknown_fixed_optimizer(tmp_path):
    message = rejection(tmp_path, MINIMAL + '[fixed]\noptimizer = "lion"\n')
    assert "fixed.optimizer:" in message and "'lion'" in message


def test_load_spec_rejects_choice_of_wrong_type(tmp_path):
    message = rejection(tmp_path, MINIMAL + '[space]\nbatch_size = { choices = [32, "64"] }\n')
    assert "every choice must be an integer, got '64'" in message


def test_load_spec_rejects_range_the_trainer_cannot_use(tmp_path):
    message = rejection(tmp_path, with_space("momentum = { low = 0.5, high = 1.5 }"))
    assert "space.momentum.high: momentum must be in [0, 1)" in message


def test_load_spec_rejects_range_for_a_boolean(tmp_path):
    message = rejection(tmp_path, with_space("nesterov = { low = 0, high = 1 }"))
    assert "space.nesterov: is a boolean (true/false): give choices" in message


def test_load_spec_rejects_parameter_both_fixed_and_searched(tmp_path):
    text = MINIMAL + "[fixed]\nlr = 0.1\n[space]\nlr = { low = 0.01, high = 1.0 }\n"
    message = rejection(tmp_path, text)
    assert "space.lr: is also set in [fixed]" in message


def test_load_spec_rejects_step_with_log(tmp_path):
    entry = "width = { low = 8, high = 64, log = true, step = 8 }"
    message = rejection(tmp_path, with_space(entry))
    assert "space.width.step: cannot be combined with log = true" in message


def test_shipped_studies_dir_is_the_repository_studies_folder():
    assert SHIPPED_DIR.name == "studies" and (SHIPPED_DIR / "mnist.toml").is_file()


def test_definition_excludes_budget_but_includes_search(tmp_path):
    searched = "[space]\nlr = { low = 0.01, high = 1.0 }\n"
    base = load_text(tmp_path, MINIMAL + "[budget]\nn_trials = 5\n" + searched)
    (tmp_path / "s.toml").write_text(MINIMAL + "[budget]\nn_trials = 50\n" + searched)
    more = load_spec(str(tmp_path / "s.toml"))
    assert base.definition() == more.definition()
    assert base.definition()["space"] == {"lr": {"low": 0.01, "high": 1.0, "log": False}}
