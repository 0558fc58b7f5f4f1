from __future__ import annotations

import optuna
import pytest

from autotune.search._samplers import build_pruner, prune_reason


def study_with_complete_trials(curves: list[list[float]], direction: str = "maximize",
                               metric: str = "val_accuracy") -> optuna.Study:
    """An in-memory study holding one complete trial per learning curve."""
    study = optuna.create_study(direction=direction)
    study.set_metric_names([metric])
    pick = max if direction == "maximize" else min
    for curve in curves:
        study.add_trial(optuna.trial.create_trial(
            value=pick(curve), intermediate_values=dict(enumerate(curve, start=1))))
    return study


def test_build_pruner_wraps_any_pruner_in_patience_when_asked() -> None:
    pruner = build_pruner("median", {"n_warmup_steps": 1, "patience": 2, "min_delta": 0.01}, 10)
    assert isinstance(pruner, optuna.pruners.PatientPruner)
    assert isinstance(pruner._wrapped_pruner, optuna.pruners.MedianPruner)
    assert (pruner._patience, pruner._min_delta) == (2, 0.01)
    plateau = build_pruner("none", {"patience": 3}, 10)
    assert isinstance(plateau, optuna.pruners.PatientPruner) and plateau._wrapped_pruner is None
    assert isinstance(build_pruner("median", {}, 10), optuna.pruners.MedianPruner)


def test_build_pruner_refuses_min_delta_without_patience() -> None:
    with pytest.raises(ValueError, match="min_delta needs patience"):
        build_pruner("median", {"min_delta": 0.1}, 10)


def test_build_pruner_gives_hyperband_the_study_epochs_as_max_resource() -> None:
    pruner = build_pruner("hyperband", {"min_resource": 1, "reduction_factor": 3}, 12)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner) and pruner._max_resource == 12


def test_median_patience_prunes_a_stalled_trial_below_the_median_but_not_an_improving_one(
) -> None:
    study = study_with_complete_trials([[0.8, 0.85, 0.9, 0.92]] * 3)
    pruner = build_pruner("median", {"patience": 1, "n_startup_trials": 1}, 4)
    for curve, pruned in (([0.5, 0.6, 0.7, 0.72], False), ([0.5, 0.7, 0.69, 0.68], True)):
        trial = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING,
                                          intermediate_values=dict(enumerate(curve, start=1)))
        assert bool(pruner.prune(study, trial)) is pruned


def test_prune_reason_of_the_median_pruner_names_the_median_it_lost_to() -> None:
    study = study_with_complete_trials([[0.8, 0.9], [0.7, 0.85], [0.6, 0.8]])
    reason = prune_reason(study, "median", {"n_warmup_steps": 1}, [0.5, 0.55])
    assert reason == ("pruned by median at epoch 2: val_accuracy 0.5500 (best so far 0.5500); "
                      "best so far < 0.8500, the median of 3 complete trials at this epoch")


def test_prune_reason_of_a_minimising_study_compares_the_lowest_values() -> None:
    study = study_with_complete_trials([[0.9, 0.3], [1.0, 0.4], [1.1, 0.5]],
                                       direction="minimize", metric="val_loss")
    reason = prune_reason(study, "median", {"n_warmup_steps": 1}, [0.8, 0.7])
    assert reason == ("pruned by median at epoch 2: val_loss 0.7000 (best so far 0.7000); "
                      "best so far > 0.4000, the median of 3 complete trials at this epoch")


def test_prune_reason_of_a_percentile_pruner_names_its_percentile() -> None:
    study = study_with_complete_trials([[0.9], [0.8], [0.7], [0.6], [0.5]])
    reason = prune_reason(study, "percentile", {"percentile": 25.0}, [0.6])
    assert "best so far < 0.8000, the 75th percentile of 5 complete trials" in reason


@pytest.mark.parametrize(("name", "options", "factor"), [
    ("hyperband", {"min_resource": 1}, 3), ("hyperband", {"reduction_factor": 4}, 4),
    ("successive_halving", {}, 4)])
def test_prune_reason_of_halving_pruners_names_the_rung_and_the_kept_share(
        name: str, options: dict[str, int], factor: int) -> None:
    reason = prune_reason(study_with_complete_trials([]), name, options, [0.7, 0.6, 0.65])
    assert reason == (f"pruned by {name} at epoch 3: val_accuracy 0.6500 (best so far "
                      f"0.7000); not in the top 1/{factor} of the trials that reached this "
                      "epoch (a rung)")


def test_prune_reason_with_patience_describes_the_plateau_first() -> None:
    study = study_with_complete_trials([[0.8, 0.85, 0.9, 0.92]])
    reason = prune_reason(study, "median", {"patience": 1}, [0.5, 0.7, 0.69, 0.68])
    assert reason.startswith("pruned by median with patience 1 at epoch 4: val_accuracy "
                             "0.6800 (best so far 0.7000); no gain over 0 in the last 2 "
                             "epochs (0.7000 before, 0.6900 since); best so far < 0.9200")
