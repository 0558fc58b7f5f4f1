from __future__ import annotations

import optuna
import pytest

from autotune.spec import _space as space
from autotune.spec._spec import parse_spec

ALL_OPTIMIZERS = ["sgd", "adam", "adamw", "rmsprop", "nadam", "adadelta"]


def make_spec(optimizers=ALL_OPTIMIZERS, fixed=None):
    return parse_spec({
        "dataset": "digits",
        "fixed": fixed or {},
        "space": {
            "lr": {"low": 1e-4, "high": 1.0, "log": True},
            "optimizer": {"choices": list(optimizers)},
            "momentum": {"low": 0.0, "high": 0.9},
            "nesterov": {"choices": [True, False]},
            "beta1": {"low": 0.8, "high": 0.95},
            "beta2": {"low": 0.9, "high": 0.9999},
            "batch_size": {"choices": [16, 32]},
            "width": {"low": 8, "high": 64, "log": True},
        },
    }, path="test.toml")


def sample_many(spec, n=60, seed=0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs = []
    for _ in range(n):
        trial = study.ask()
        configs.append((trial, space.suggest(trial, spec, seed=trial.number)))
        study.tell(trial, 0.0)
    return configs


def test_suggest_samples_momentum_and_nesterov_only_for_optimizers_that_use_them():
    for trial, cfg in sample_many(make_spec()):
        params = trial.params
        assert ("momentum" in params) == (cfg.optimizer in ("sgd", "rmsprop"))
        assert ("nesterov" in params) == (cfg.optimizer == "sgd")
        assert ("beta1" in params) == (cfg.optimizer in ("adam", "adamw", "nadam"))
        assert ("beta2" in params) == (cfg.optimizer in ("adam", "adamw", "nadam"))


def test_suggest_covers_every_declared_optimizer():
    seen = {cfg.optimizer for _, cfg in sample_many(make_spec(), n=120)}
    assert seen == set(ALL_OPTIMIZERS)


def test_suggest_respects_declared_ranges_and_types():
    for trial, cfg in sample_many(make_spec()):
        assert 1e-4 <= cfg.lr <= 1.0
        assert cfg.batch_size in (16, 32)
        assert isinstance(cfg.width, int) and 8 <= cfg.width <= 64
        assert trial.params["lr"] == cfg.lr  # one name everywhere


def test_fixed_optimizer_decides_which_params_are_sampled():
    spec = make_spec(optimizers=["adam"], fixed=None)
    spec_fixed = parse_spec({"dataset": "digits", "fixed": {"optimizer": "adamw"},
                             "space": {"momentum": {"low": 0.0, "high": 0.9},
                                       "beta1": {"low": 0.8, "high": 0.95}}}, path="t.toml")
    for trial, cfg in sample_many(spec_fixed, n=5):
        assert cfg.optimizer == "adamw"
        assert set(trial.params) == {"beta1"}
    assert all(cfg.optimizer == "adam" for _, cfg in sample_many(spec, n=5))


def test_to_config_rebuilds_a_stored_trial_with_fixed_values_and_epochs():
    spec = make_spec(fixed={"depth": 3})
    trial, cfg = sample_many(spec, n=1)[0]
    rebuilt = space.to_config(spec, trial.params, seed=cfg.seed, max_epochs=2)
    assert rebuilt.depth == 3 and rebuilt.max_epochs == 2
    assert rebuilt.lr == cfg.lr and rebuilt.optimizer == cfg.optimizer


@pytest.mark.parametrize("name", ["momentum", "nesterov", "beta1", "beta2"])
def test_applies_is_false_for_optimizers_that_ignore_the_param(name):
    assert not space.applies(name, {"optimizer": "adadelta"})
    assert space.applies("lr", {"optimizer": "adadelta"})


def test_suggest_samples_decay_rate_and_warmup_only_for_the_schedules_that_use_them():
    spec = parse_spec({
        "dataset": "digits",
        "space": {
            "schedule": {"choices": ["exponential", "cosine", "onecycle"]},
            "decay_rate": {"low": 0.7, "high": 1.0},
            "warmup_fraction": {"low": 0.1, "high": 0.3},
        },
    }, path="test.toml")
    configs = sample_many(spec)
    for trial, cfg in configs:
        assert ("decay_rate" in trial.params) == (cfg.schedule == "exponential")
        assert ("warmup_fraction" in trial.params) == (cfg.schedule == "onecycle")
    assert {cfg.schedule for _, cfg in configs} == {"exponential", "cosine", "onecycle"}
