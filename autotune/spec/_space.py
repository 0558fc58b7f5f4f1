"""The search space: the only place that calls trial.suggest_*; conditional params live here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

from autotune.spec._config import TrainConfig, field_types
from autotune.spec._spec import ParamSpec, StudySpec

# Hyperparameters that only mean something for some optimizers: sampled only for those, so
# the sampler never learns from values that had no effect.
ONLY_FOR_OPTIMIZERS: dict[str, tuple[str, ...]] = {
    "momentum": ("sgd", "rmsprop"),
    "nesterov": ("sgd",),
    "beta1": ("adam", "adamw", "nadam"),
    "beta2": ("adam", "adamw", "nadam"),
}
# Likewise for the LR schedule's own knobs.
ONLY_FOR_SCHEDULES: dict[str, tuple[str, ...]] = {
    "decay_rate": ("exponential",),
    "warmup_fraction": ("onecycle",),
}
# Sampled before the rest because they decide which other params apply.
FIRST = ("model", "optimizer", "schedule")


def suggest(trial: optuna.Trial, spec: StudySpec, seed: int) -> TrainConfig:
    """Sample one configuration for a trial and build its TrainConfig."""
    return to_config(spec, suggest_params(trial, spec), seed=seed)


def suggest_params(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """Sample one value of every searched param that applies."""
    params: dict[str, Any] = {}
    ordered = sorted(spec.space, key=lambda p: p.name not in FIRST)
    for param in ordered:
        # the user's own training gets every param it declares: their names mean what it says
        if spec.own_training or applies(param.name, {**spec.fixed, **params}):
            params[param.name] = suggest_one(trial, param)
    return params


def applies(name: str, chosen: Mapping[str, Any]) -> bool:
    """Whether a hyperparameter has an effect given the values chosen so far."""
    optimizers = ONLY_FOR_OPTIMIZERS.get(name)
    schedules = ONLY_FOR_SCHEDULES.get(name)
    return ((optimizers is None
             or chosen.get("optimizer", TrainConfig.optimizer) in optimizers)
            and (schedules is None
                 or chosen.get("schedule", TrainConfig.schedule) in schedules))


def suggest_one(trial: optuna.Trial, param: ParamSpec) -> Any:
    """Ask the trial for one value of a declared parameter."""
    if param.choices is not None:
        return trial.suggest_categorical(param.name, list(param.choices))
    if isinstance(param.low, int) and isinstance(param.high, int):
        return trial.suggest_int(param.name, param.low, param.high, log=param.log,
                                 step=int(param.step or 1))
    return trial.suggest_float(param.name, float(param.low), float(param.high),  # type: ignore[arg-type]
                               log=param.log, step=param.step)


def to_config(spec: StudySpec, params: Mapping[str, Any], *, seed: int,
              max_epochs: int | None = None) -> TrainConfig:
    """Combine the study's fixed settings with sampled params; also rebuilds a stored trial."""
    values = {"model": spec.model, "max_epochs": max_epochs or spec.max_epochs, **spec.fixed,
              **params, "seed": seed}
    fields = field_types()  # the rest are params only a user's model knows (model_params)
    return TrainConfig(**{k: v for k, v in values.items() if k in fields})


def model_params(spec: StudySpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """Every param a user's `build(params, info)` receives: the fixed ones and the sampled."""
    return {**spec.fixed, **params}
