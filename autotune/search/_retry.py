"""Retrying a trial whose run was cut short (its worker died, or Ctrl-C): a new trial with
the same params, queued for the next free worker, that resumes from the last checkpoint.

Optuna's retry callback copies every user attribute onto the retry; here the retry gets
only what it must share with the trial it retries (its training seed), so its attributes
describe the retry ("interrupted" and "fail_reason" stay on the trial that was cut short).
"""

from __future__ import annotations

import copy
import datetime as dt
import warnings

import optuna
from optuna.trial import FrozenTrial

INHERITED_USER_ATTRS = ("seed",)  # a retry trains with the seed of the trial it continues
MAX_RETRY = 3  # retries of one trial whose workers keep dying


class RetryTrial:
    """A `heartbeat_stale_trial_callback`: queue a retry of a failed trial, at most
    `max_retry` times per original trial (its `retry_history` system attribute)."""

    def __init__(self, max_retry: int | None = MAX_RETRY) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # Optuna 5 name, else the 4.x one
            factory = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or \
                optuna.storages.RetryFailedTrialCallback
            self._queue = factory(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trial = copy.deepcopy(trial)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items()
                            if k in INHERITED_USER_ATTRS}
        self._queue(study, trial)


def stale_reason(trial: FrozenTrial, last_beat: dt.datetime | None,
                 clock: str = "database time") -> str:
    """Why a trial whose worker went silent failed, for its `fail_reason`."""
    pid, host = trial.user_attrs.get("pid"), trial.user_attrs.get("host")
    who = f"worker {pid} on {host}" if pid and host else "its worker"
    when = f" at {last_beat.isoformat(sep=' ', timespec='seconds')} ({clock})" \
        if last_beat else ""
    return f"{who} stopped sending heartbeats{when}; retried from its last checkpoint"
