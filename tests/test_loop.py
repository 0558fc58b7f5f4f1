"""This process's trial loop on a real SQLite study: outcomes, callbacks, stop, Ctrl-C and
the retry of a trial whose worker stopped beating."""

from __future__ import annotations

import datetime
import os
import signal
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autotune.fast._batched import BatchedRDBStorage
from autotune.search import _loop as loop
from autotune.storage import _storage as storage


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
    cut = study.get_trials()[-1]
    assert cut.user_attrs[loop.INTERRUPTED_ATTR] is True  # the next run requeues it
    assert "interrupted" in cut.user_attrs["fail_reason"]
    assert not study.get_trials()[2].user_attrs.get(loop.INTERRUPTED_ATTR)


class SignalingSampler(optuna.samplers.RandomSampler):
    """Sends this process SIGINT from inside ask() (`before_trial`) or the tell (`after_trial`)
    of one trial, as a Ctrl-C pressed at that moment would."""

    def __init__(self, when: str, trial_number: int, n_signals: int = 1) -> None:
        super().__init__(seed=0)
        self.when, self.trial_number, self.n_signals = when, trial_number, n_signals

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.when == "ask" and trial.number == self.trial_number:
            self.send()

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                    state: TrialState, values: list[float] | None) -> None:
        if self.when == "tell" and trial.number == self.trial_number:
            self.send()

    def send(self) -> None:
        for _ in range(self.n_signals):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # the handler runs here, in this thread, before the next one


def study_with(tmp_path: Path, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    return optuna.create_study(storage=storage.open_storage(f"sqlite:///{tmp_path / 'sig.db'}"),
                               direction="maximize", sampler=sampler)


def test_ctrl_c_while_a_trial_is_created_closes_it_as_interrupted(tmp_path):
    study = study_with(tmp_path, SignalingSampler("ask", trial_number=1))
    ran: list[int] = []

    def objective_(trial: optuna.Trial) -> float:
        ran.append(trial.number)
        return trial.suggest_float("x", 0.0, 1.0)

    with pytest.raises(KeyboardInterrupt):
        loop.run_trials(study, objective_, stop=lambda: False)
    trials = study.get_trials()
    assert ran == [0]  # the objective never started on the trial being created
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert trials[1].user_attrs[loop.INTERRUPTED_ATTR] is True


def test_ctrl_c_while_a_trial_is_finished_lets_it_finish_and_starts_no_other(tmp_path):
    study = study_with(tmp_path, SignalingSampler("tell", trial_number=1))
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where the suite runs in the background
    with pytest.raises(KeyboardInterrupt):
        loop.run_trials(study, lambda trial: trial.suggest_float("x", 0.0, 1.0),
                        stop=lambda: False)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[1].value == trials[1].params["x"]
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_a_second_ctrl_c_while_a_trial_is_created_stops_at_once(tmp_path):
    study = study_with(tmp_path, SignalingSampler("ask", trial_number=0, n_signals=2))
    with pytest.raises(KeyboardInterrupt):
        loop.run_trials(study, lambda trial: 1.0, stop=lambda: False)
    # cut inside ask(): the trial stays RUNNING until the stale-trial check fails it
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING]


def test_the_timeout_starts_no_trial_after_it(tmp_path):
    study = new_study(tmp_path)

    def slow(trial: optuna.Trial) -> float:
        time.sleep(0.3)
        return 1.0

    started = datetime.datetime.now()
    loop.run_trials(study, slow, stop=lambda: False, timeout_s=0.5)
    ended = datetime.datetime.now()
    trials = study.get_trials()
    # trials start until 0.5 s have passed (two here, unless the first ask took > 0.2 s),
    # none after: the loop ends with the first trial that finishes past the timeout
    assert 1 <= len(trials) <= 2 and all(t.state == TrialState.COMPLETE for t in trials)
    assert all(t.datetime_start - started < datetime.timedelta(seconds=0.5) for t in trials)
    assert trials[-1].datetime_complete - started >= datetime.timedelta(seconds=0.5)
    assert ended - trials[-1].datetime_complete < datetime.timedelta(seconds=0.3)


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
