from __future__ import annotations

from pathlib import Path

import pytest

from autotune.errors import SpecError
from autotune.spec._spec import SHIPPED_DIR, load_spec, parse_spec, shipped_names

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
        searched = {p.name: p for p in spec.space}
        assert set(searched) >= {"lr", "momentum", "batch_size", "optimizer"}
        # decay_rate is the exponential schedule's: searched wherever that schedule may run
        schedules = searched["schedule"].choices if "schedule" in searched else (
            spec.fixed.get("schedule", "exponential"),)
        assert ("decay_rate" in searched) == ("exponential" in schedules)


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


# --- horizontal flips, the final retrain, pruner patience --------------------------------


@pytest.mark.parametrize("dataset", ["digits", "mnist"])
@pytest.mark.parametrize(("entry", "key", "shown"), [
    ("[fixed]\nhflip = true", "fixed.hflip", "true"),
    ("[space]\nhflip = { choices = [false, true] }", "space.hflip.choices", "[true, ...]"),
])
def test_load_spec_refuses_horizontal_flips_of_digits(tmp_path, dataset, entry, key, shown):
    message = rejection(tmp_path, f'dataset = "{dataset}"\n{entry}\n')
    assert f"{key}: {shown} is not allowed for dataset '{dataset}'" in message
    assert "allowed: false" in message


def test_load_spec_allows_horizontal_flips_of_garments_and_unflipped_digits(tmp_path):
    spec = load_text(tmp_path, 'dataset = "fashion-mnist"\n[fixed]\nhflip = true\n')
    assert spec.fixed["hflip"] is True
    assert load_text(tmp_path, MINIMAL + "[fixed]\nhflip = false\n").fixed["hflip"] is False


def test_load_spec_reads_trial_weights_defaulting_to_improving_trials(tmp_path):
    assert load_text(tmp_path, MINIMAL).trial_weights == "improving"
    spec = load_text(tmp_path, MINIMAL + 'trial_weights = "all"\n')
    assert spec.trial_weights == "all"
    assert "trial_weights" not in spec.definition()  # a resume may change it
    message = rejection(tmp_path, MINIMAL + 'trial_weights = "best"\n')
    assert "trial_weights: unknown value 'best'; allowed: improving, all, none" in message


def test_load_spec_reads_final_train_defaulting_to_the_train_split(tmp_path):
    assert load_text(tmp_path, MINIMAL).final_train == "train"
    spec = load_text(tmp_path, MINIMAL + 'final_train = "train+val"\n')
    assert spec.final_train == "train+val"
    assert "final_train" not in spec.definition()  # the search does not depend on it
    message = rejection(tmp_path, MINIMAL + 'final_train = "all"\n')
    assert "final_train: unknown value 'all'; allowed: train, train+val" in message


def test_load_spec_accepts_patience_on_any_pruner(tmp_path):
    spec = load_text(tmp_path, MINIMAL + '[pruner]\nname = "median"\nn_warmup_steps = 1\n'
                                         "patience = 2\nmin_delta = 0.001\n")
    assert spec.pruner_options == {"n_warmup_steps": 1, "patience": 2, "min_delta": 0.001}
    spec = load_text(tmp_path, MINIMAL + '[pruner]\nname = "none"\npatience = 3\n')
    assert spec.pruner_options == {"patience": 3}


def test_load_spec_rejects_min_delta_without_patience(tmp_path):
    message = rejection(tmp_path, MINIMAL + '[pruner]\nname = "median"\nmin_delta = 0.01\n')
    assert "pruner 'median' rejects its options: min_delta needs patience" in message


def test_load_spec_lists_patience_among_the_pruner_options(tmp_path):
    message = rejection(tmp_path, MINIMAL + '[pruner]\nname = "hyperband"\npatient = 2\n')
    assert "pruner.patient: unknown option for pruner 'hyperband'" in message
    assert "min_resource" in message and "patience" in message


def test_the_fashion_mnist_study_fits_its_hour_and_searches_on_validation_only():
    spec = load_spec("fashion-mnist")
    assert spec.final_train == "train+val" and 0 < spec.val_fraction < 1
    assert spec.timeout_s is not None and spec.timeout_s <= 1800
    assert spec.fixed["hflip"] is True and spec.pruner == "median"
    assert {p.name for p in spec.space} >= {"schedule", "label_smoothing", "crop_padding",
                                            "dropout", "width"}


def test_start_from_entries_are_kept_and_become_part_of_the_definition(tmp_path: Path) -> None:
    spec = load_text(tmp_path, START_FROM_STUDY + 'lr = 0.01\noptimizer = "sgd"\n')
    assert spec.start_from == ({"lr": 0.01, "optimizer": "sgd"},)
    assert spec.definition()["start_from"] == [{"lr": 0.01, "optimizer": "sgd"}]


@pytest.mark.parametrize(("entry", "message"), [
    ("width = 8", "start_from[0].width: is not a searched param; allowed: lr, optimizer"),
    ("lr = 2.0", "start_from[0].lr: must be a number in [0.0001, 0.1], got 2.0"),
    ('optimizer = "lbfgs"', "start_from[0].optimizer: must be one of ['sgd', 'adam'], "
                            "got 'lbfgs'"),
])
def test_start_from_rejects_unknown_params_and_values_outside_the_space(
        tmp_path: Path, entry: str, message: str) -> None:
    assert rejection(tmp_path, START_FROM_STUDY + entry + "\n") == (
        f"{tmp_path / 's.toml'}: {message}")


START_FROM_STUDY = MINIMAL + """[space]
lr = { low = 1e-4, high = 0.1, log = true }
optimizer = { choices = ["sgd", "adam"] }
[[start_from]]
"""


def test_loss_and_metric_default_to_cross_entropy_and_accuracy_and_stay_out_of_old_definitions():
    spec = parse_spec({"dataset": "digits"}, path="s.toml")
    assert (spec.loss, spec.metric) == ("cross_entropy", "val_accuracy")
    assert "loss" not in spec.definition() and "metric" not in spec.definition()


def test_a_hinge_loss_scored_by_validation_loss_is_part_of_the_definition():
    spec = parse_spec({"dataset": "digits", "loss": "hinge", "metric": "val_loss"},
                      path="s.toml")
    assert (spec.loss, spec.metric) == ("hinge", "val_loss")
    assert spec.definition()["loss"] == "hinge" and spec.definition()["metric"] == "val_loss"


@pytest.mark.parametrize(("raw", "message"), [
    ({"loss": "mae"}, "s.toml: loss: unknown value 'mae'; allowed: cross_entropy, hinge, mse, "
                      "l1, smooth_l1, huber"),
    ({"metric": "val_f1"}, "s.toml: metric: unknown value 'val_f1'; allowed: val_accuracy, "
                           "val_loss, val_rmse, val_mae, val_r2"),
    ({"metric": "val_r2"}, "s.toml: metric: metric 'val_r2' does not fit classification loss "
                           "'cross_entropy'; allowed: val_accuracy, val_loss"),
])
def test_an_unknown_loss_or_metric_is_refused_naming_the_allowed(raw, message):
    with pytest.raises(SpecError) as caught:
        parse_spec({"dataset": "digits", **raw}, path="s.toml")
    assert str(caught.value) == message


def test_resources_per_trial_are_read_checked_and_not_part_of_the_definition(tmp_path):
    spec = load_text(tmp_path, MINIMAL + "cpus_per_trial = 2\ngpus_per_trial = 0.25\n")
    assert (spec.cpus_per_trial, spec.gpus_per_trial) == (2.0, 0.25)
    plain = load_text(tmp_path, MINIMAL)
    assert (plain.cpus_per_trial, plain.gpus_per_trial) == (1.0, 0.0)
    assert spec.definition() == plain.definition()  # where it runs, not what it is
    assert "cpus_per_trial: must be in (0, inf), got 0" in rejection(
        tmp_path, MINIMAL + "cpus_per_trial = 0\n")
    assert "gpus_per_trial: must be in [0, inf], got -1" in rejection(
        tmp_path, MINIMAL + "gpus_per_trial = -1\n")
