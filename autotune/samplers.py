"""Sampler and pruner registries: a name and options from a study file -> an Optuna object."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import optuna

SAMPLERS: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "qmc": optuna.samplers.QMCSampler,
}

PRUNERS: dict[str, Callable[..., optuna.pruners.BasePruner]] = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "none": optuna.pruners.NopPruner,
}

# Explicit TPE settings: Optuna 4.x and 5.x disagree on the defaults of these flags.
# multivariate+group model the conditional space jointly; constant_liar keeps parallel
# workers from sampling the same point while trials are running.
TPE_DEFAULTS: dict[str, Any] = {"multivariate": True, "group": True, "constant_liar": True}

# Constructor arguments that take Python objects, not values a TOML file can hold.
_NOT_FROM_FILE = {"seed", "constraints_func", "gamma", "weights", "independent_sampler",
                  "source_trials", "x0"}


def allowed_options(factory: Callable[..., object]) -> list[str]:
    """Names of the constructor arguments a study file may set for this sampler or pruner."""
    params = inspect.signature(factory).parameters.values()
    return sorted(
        p.name for p in params
        if p.name not in _NOT_FROM_FILE and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    )


def build_sampler(name: str, options: Mapping[str, Any], seed: int | None
                  ) -> optuna.samplers.BaseSampler:
    """Build the named sampler; TPE gets explicit multivariate/group/constant_liar flags."""
    kwargs = dict(TPE_DEFAULTS) if name == "tpe" else {}
    kwargs.update(options)
    with warnings.catch_warnings():
        # multivariate/group TPE and some samplers are flagged experimental: not news to users.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SAMPLERS[name](seed=seed, **kwargs)


def build_pruner(name: str, options: Mapping[str, Any], max_epochs: int
                 ) -> optuna.pruners.BasePruner:
    """Build the named pruner; Hyperband's max_resource defaults to the study's max_epochs."""
    kwargs = dict(options)
    if name == "hyperband":
        kwargs.setdefault("max_resource", max_epochs)
    return PRUNERS[name](**kwargs)
