"""This process's trial loop on a real SQLite study: outcomes, callbacks, stop, Ctrl-C and
the retry of a trial whose worker stopped beating."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autotune import loop, storage
from autotune.batched import BatchedRDBStorage


def new_study(tmp_path: Path, **storage_kwargs: object) -> optuna.Study:
    url = f"sqlite:///{tmp_path / 'loop.db'}"
    backend = (BatchedRDBStorage(url, **storage_kwargs) if storage_kwargs  # type: ignore[arg-type]
               else storage.open_storage(url))
    return optuna.create_study(storage=backend, direction="maximize",
                               sampler=optuna.samplers.RandomSampler(seed=0))


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0.0, 1.0)
    trial.report(x, 1)
    if trial.number == 1:
        raise optuna.TrialPruned()
    if trial.number == 2:
        raise ArithmeticError("a caught failure")
    return x


def test_trials_end_as_their_objective_says_and_callbacks_see_them_as_stored(tmp_path):
    study = new_study(tmp_path)
    seen: list[optuna.trial.FrozenTrial] = []
    loop.run_trials(study, objective, stop=lambda: len(seen) >= 4, catch=(ArithmeticError,),
                    callbacks=[lambda _study, trial: seen.append(trial)])
    stored = study.get_trials()
    assert [t.state for t in stored] == [TrialState.COMPLETE, TrialState.PRUNED,
                                         TrialState.FAIL, TrialState.COMPLETE]
    assert stored[1].value == stored[1].intermediate_values[1]  # pruned: its last report
    for got, expected in zip(seen, stored, strict=True):
        for field in ("number", "state", "values", "params", "intermediate_values",
                      "datetime_start", "datetime_complete"):
            assert getattr(got, field) == getattr(expected, field), field


def test_an_uncaught_exception_or_ctrl_c_fails_the_trial_and_propagates(tmp_path):
    study = new_study(tmp_path)
    with pytest.raises(ArithmeticError):
        loop.run_trials(study, objective, stop=lambda: False)
    assert [t.state for t in study.get_trials()][-1] == TrialState.FAIL

    def interrupted(trial: optuna.Trial) -> float:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loop.run_trials(study, interrupted, stop=lambda: False)
    assert [t.state for t in study.get_trials()] == [
        TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL]


def test_the_timeout_starts_no_trial_after_it(tmp_path):
    study = new_study(tmp_path)

    def slow(trial: optuna.Trial) -> float:
        time.sleep(0.3)
        return 1.0

    loop.run_trials(study, slow, stop=lambda: False, timeout_s=0.5)
    assert len(study.get_trials()) == 2


def test_a_trial_whose_worker_stopped_beating_is_failed_and_its_retry_run(tmp_path):
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
    study = new_study(tmp_path, heartbeat_interval=1, grace_period=1,
                      heartbeat_stale_trial_callback=retry)
    dead = study.ask()  # a worker that asked, beat once, then died
    dead.suggest_float("x", 0.0, 1.0)
    study._storage.record_heartbeat(dead._trial_id)
    time.sleep(2.5)  # past the grace period (the database clock counts whole seconds)
    loop.run_trials(study, lambda trial: trial.suggest_float("x", 0.0, 1.0),
                    stop=lambda: True)
    first, again = study.get_trials()
    assert first.state == TrialState.FAIL
    assert again.state == TrialState.COMPLETE and again.params == first.params
    assert again.system_attrs["failed_trial"] == first.number
