"""Heartbeats where the storage keeps none: a trial attribute, and watchers that notice it stop.

Optuna records heartbeats only in relational storages (`BaseHeartbeat`). Its gRPC storage
proxy is not one (its protocol has no heartbeat call), nor is the journal storage: a worker
that dies there would leave its trial RUNNING for ever. Here a running trial's worker writes
the system attribute `autotune:beat` (its wall-clock time) every heartbeat interval, through
the storage's public `set_trial_system_attr`; any process that watches the study (the run
that started the workers, and every worker between its trials) fails a running trial whose
beat has not changed for the grace period, as the watcher's own clock measures it (clocks of
different machines are never compared), and queues its retry (same params, resumed from its
last checkpoint), as Optuna does for stale trials of a relational storage.
"""

from __future__ import annotations

import datetime as dt
import time

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.search._retry import RetryTrial, stale_reason

BEAT_ATTR = "autotune:beat"  # trial system attribute: the worker's time.time() at its last beat


class AttrBeats:
    """`record_heartbeat(trial_id)` for any storage: the beat as a trial system attribute."""

    def __init__(self, storage: optuna.storages.BaseStorage) -> None:
        self.storage = storage

    def record_heartbeat(self, trial_id: int) -> None:
        self.storage.set_trial_system_attr(trial_id, BEAT_ATTR, round(time.time(), 3))


class StaleWatch:
    """Running trials of one study whose beat stayed the same for `grace_s` of this watcher's
    time. A watcher that starts late gives every trial the full grace period from then."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._seen: dict[int, tuple[object, float]] = {}  # trial id -> (beat, since when)

    def stale(self, running: list[FrozenTrial]) -> list[FrozenTrial]:
        now = time.monotonic()
        seen: dict[int, tuple[object, float]] = {}
        out = []
        for trial in running:
            beat = trial.system_attrs.get(BEAT_ATTR)
            previous = self._seen.get(trial._trial_id)
            since = previous[1] if previous is not None and previous[0] == beat else now
            seen[trial._trial_id] = (beat, since)
            if now - since >= self.grace_s:
                out.append(trial)
        self._seen = seen  # finished trials drop out
        return out


_watches: dict[tuple[int, int], StaleWatch] = {}  # (id of the storage, study id) -> watch


def fail_silent_trials(study: optuna.Study, grace_s: float) -> list[int]:
    """Fail the study's running trials whose beat went silent, each with a `fail_reason`,
    and queue each one's retry; the numbers of those this process failed. Two watchers
    racing for one trial: the storage lets one finish it, and only that one queues a retry."""
    storage = study._storage
    key = (id(storage), study._study_id)
    watch = _watches.setdefault(key, StaleWatch(grace_s))
    running = storage.get_all_trials(study._study_id, deepcopy=False,
                                     states=(TrialState.RUNNING,))
    failed = []
    for trial in watch.stale(running):
        beat = trial.system_attrs.get(BEAT_ATTR)
        last = (dt.datetime.fromtimestamp(float(beat), dt.UTC) if isinstance(beat, int | float)
                else None)
        try:
            storage.set_trial_user_attr(trial._trial_id, "fail_reason",
                                        stale_reason(trial, last, clock="its worker's clock"))
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # it finished, or another watcher failed it first
        RetryTrial()(study, storage.get_trial(trial._trial_id))
        failed.append(trial.number)
    return failed
