"""The study-wide trial budget: exactly N finished trials, however many workers share it."""

from __future__ import annotations

from collections.abc import Callable

import optuna

from autotune.errors import AutotuneError
from autotune.search._study import FINISHED
from autotune.storage._storage import claim_counter

RUNNING = optuna.trial.TrialState.RUNNING


class Surplus(AutotuneError):
    """Raised at the start of a trial that would exceed the study's total; it is not run."""


def n_claimed(study: optuna.Study, before: int | None = None) -> int:
    """Finished trials plus running ones (numbered below `before`, if given)."""
    backend = claim_counter(study)
    if backend is not None:  # the storage counts in the database
        return backend.count_claimed(study, before)
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state in FINISHED
               or (t.state == RUNNING and (before is None or t.number < before)))


def claimed_before(trial: optuna.Trial) -> int:
    """n_claimed(study, before=trial.number), as counted in the transaction that created the
    trial where the storage counted it there (a trial created by this process in a
    relational database), else counted now."""
    backend = claim_counter(trial.study)
    counted = None if backend is None else backend.claimed_at_creation(trial)
    return n_claimed(trial.study, before=trial.number) if counted is None else counted


def claimed_after(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> int:
    """n_claimed(study) once `trial` has finished, as counted in the transaction that
    finished it where the storage counted it there, else counted now."""
    backend = claim_counter(study)
    counted = None if backend is None else backend.claimed_at_finish(trial)
    return n_claimed(study) if counted is None else counted


def guard(objective: Callable[[optuna.Trial], float], n_trials: int
          ) -> Callable[[optuna.Trial], float]:
    """Refuse a trial that started after the budget was taken by trials ahead of it.

    Workers stop starting trials once finished + running reaches N, but two workers may both
    see N - 1 and start at the same moment; the later-numbered one is then surplus and fails
    at once, untrained, so the study still ends with exactly N finished trials.
    """
    def guarded(trial: optuna.Trial) -> float:
        if claimed_before(trial) >= n_trials:
            trial.set_user_attr("fail_reason", f"surplus: the study's {n_trials} trials were "
                                "already finished or running when this one started; not run")
            raise Surplus(f"trial {trial.number} is beyond the study's total of {n_trials}")
        return objective(trial)

    return guarded


class StopAtTotal:
    """A trial callback that says when this process should stop: once the budget is
    claimed, or after a run of failures."""

    def __init__(self, n_trials: int, max_consecutive_failures: int) -> None:
        self.n_trials = n_trials
        self.max_consecutive_failures = max_consecutive_failures
        self.n_failed = 0  # consecutive failures in this process, surplus trials excluded
        self.failed_out = False
        self.stopped = False

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        surplus = trial.user_attrs.get("fail_reason", "").startswith("surplus")
        failed = trial.state == optuna.trial.TrialState.FAIL and not surplus
        self.n_failed = self.n_failed + 1 if failed else 0
        if claimed_after(study, trial) >= self.n_trials:
            self.stopped = True
        elif self.n_failed >= self.max_consecutive_failures:
            self.failed_out = self.stopped = True
