"""Sampler and pruner registries: a name and options from a study file -> an Optuna object."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
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

# Options every pruner takes in a study file: `patience = P` wraps it in Optuna's
# PatientPruner, which lets it prune only a trial whose val accuracy has not risen by more
# than `min_delta` in its last P epochs (with name = "none": early stopping on a plateau).
PATIENCE_OPTIONS = ("patience", "min_delta")

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
    """Build the named pruner; Hyperband's max_resource defaults to the study's max_epochs.

    With a `patience` option the pruner is wrapped in PatientPruner (see PATIENCE_OPTIONS);
    `min_delta` alone is refused, as it means nothing without patience.
    """
    kwargs = dict(options)
    patience = {k: kwargs.pop(k) for k in PATIENCE_OPTIONS if k in kwargs}
    if patience and "patience" not in patience:
        raise ValueError(f"min_delta needs patience, got {patience=}")
    if name == "hyperband":
        kwargs.setdefault("max_resource", max_epochs)
    pruner = PRUNERS[name](**kwargs)
    if not patience:
        return pruner
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.pruners.PatientPruner(None if name == "none" else pruner, **patience)


def prune_reason(study: optuna.Study, name: str, options: Mapping[str, Any],
                 values: Sequence[float]) -> str:
    """Why the pruner `name` stopped a trial whose validation values per epoch are `values`
    (the study's metric, better when higher or lower as its direction says).

    Says what the trial was compared with, as the pruner compares it: the median and
    percentile pruners compare the trial's best value so far with the percentile over
    complete trials at this epoch; successive halving and Hyperband keep the top
    1/reduction_factor of the trials at each rung; patience requires a plateau first.
    """
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    worse = "<" if maximize else ">"
    epoch, value = len(values), values[-1]
    best = max(values) if maximize else min(values)
    metric = study.metric_names[0] if study.metric_names else "value"
    label = name + (f" with patience {options['patience']}" if "patience" in options else "")
    why = []
    if "patience" in options:
        window = int(options["patience"]) + 1
        edge = max if maximize else min
        before = edge(values[:-window], default=float("nan"))
        why.append(f"no gain over {float(options.get('min_delta', 0.0)):g} in the last "
                   f"{window} epochs ({before:.4f} before, {edge(values[-window:]):.4f} since)")
    if name in ("median", "percentile"):
        percentile = 50.0 if name == "median" else float(options.get("percentile", 25.0))
        complete = [t.intermediate_values[epoch]
                    for t in study.get_trials(deepcopy=False,
                                              states=(optuna.trial.TrialState.COMPLETE,))
                    if epoch in t.intermediate_values]
        kept = 100 - percentile if maximize else percentile
        what = "median" if name == "median" else f"{kept:g}th percentile"
        if complete:
            # Optuna's percentile pruner keeps the top `percentile` percent either way
            threshold = float(np.nanpercentile(
                complete, kept))
            why.append(f"best so far {worse} {threshold:.4f}, the {what} of {len(complete)} "
                       "complete trials at this epoch")
    elif name in ("successive_halving", "hyperband"):
        factor = options.get("reduction_factor", 3 if name == "hyperband" else 4)
        why.append(f"not in the top 1/{factor} of the trials that reached this epoch (a "
                   "rung)")
    return (f"pruned by {label} at epoch {epoch}: {metric} {value:.4f} (best so far "
            f"{best:.4f})" + "".join(f"; {w}" for w in why))
