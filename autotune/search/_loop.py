"""This process's trials, one after another: `run_trials(study, objective, ...)`.

What `study.optimize` does for one process (ask, run the objective, tell, callbacks, stop,
timeout, Ctrl-C), with less bookkeeping per trial:
  - one heartbeat thread for the process (`autotune.search._heartbeat`), not one per trial,
    also where the storage keeps no heartbeats (gRPC proxy, journal: `_beats`);
  - trials left running by dead workers are looked for every heartbeat interval, not
    before every trial (one query each; a dead trial waits a grace period of 30 s anyway);
  - callbacks get the finished trial as stored, not two more copies of it;
  - Ctrl-C and SIGTERM are held back while a trial is created or finished
    (`_interrupts`), so an interrupted run leaves no trial RUNNING; a trial cut short
    is marked with the user attribute `interrupted`, which the next run requeues;
  - the objects made before the first trial (torch, Optuna, SQLAlchemy, the data: ~400,000)
    are frozen out of the cyclic garbage collector, whose full passes walked them all
    (~300 ms each, about once per 100 trials here: ~3 ms a trial).
"""

from __future__ import annotations

import contextlib
import gc
import time
import warnings
from collections.abc import Callable, Sequence

import optuna
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.study._tell import _tell_with_warning
from optuna.trial import FrozenTrial, TrialState

from autotune.search._beats import AttrBeats, fail_silent_trials
from autotune.search._heartbeat import Heartbeat, read_heartbeats
from autotune.search._interrupts import Interrupts
from autotune.search._retry import stale_reason
from autotune.storage._storage import grace_s, heartbeat_s

Objective = Callable[[optuna.Trial], float]
Callback = Callable[[optuna.Study, FrozenTrial], None]

INTERRUPTED_ATTR = "interrupted"  # user attribute: Ctrl-C or SIGTERM cut this trial short


def run_trials(study: optuna.Study, objective: Objective, *, stop: Callable[[], bool],
               timeout_s: float | None = None, catch: tuple[type[Exception], ...] = (),
               callbacks: Sequence[Callback] = ()) -> None:
    """Run trials until `stop()` is true after a trial, or `timeout_s` seconds have passed.

    A trial whose objective raises `optuna.TrialPruned` is pruned; one that raises an
    exception is failed, and the exception propagates unless it is one of `catch`; Ctrl-C
    or SIGTERM fails the running trial, marked `interrupted`, and raises KeyboardInterrupt;
    one that comes while a trial is being finished lets it finish first. Callbacks run after
    each trial, in order.
    """
    storage = study._storage
    heartbeat = heartbeat_for(storage)
    gc.freeze()  # they live as long as the process; the collector skips them from now on
    started = time.monotonic()
    next_stale_check = started
    study._thread_local.in_optimize_loop = True  # as study.optimize: ask() expects heartbeats
    with Interrupts().installed() as interrupts:
        try:
            while timeout_s is None or time.monotonic() - started < timeout_s:
                if time.monotonic() >= next_stale_check:
                    fail_stale_trials(study)
                    next_stale_check = time.monotonic() + heartbeat.interval_s
                trial = run_trial(study, objective, catch, heartbeat, interrupts)
                for callback in callbacks:
                    callback(study, trial)
                if stop():
                    break
        finally:
            study._thread_local.in_optimize_loop = False
            storage.remove_session()


def run_trial(study: optuna.Study, objective: Objective, catch: tuple[type[Exception], ...],
              heartbeat: Heartbeat | None, interrupts: Interrupts) -> FrozenTrial:
    """Ask for a trial, run the objective on it and tell the outcome; the finished trial."""
    with interrupts.held():
        trial = study.ask()
    value: float | None = None
    state: TrialState | None = None  # None: complete, if the value is a number
    error: BaseException | None = None
    beating = heartbeat.beating(trial._trial_id) if heartbeat else contextlib.nullcontext()
    with beating:
        try:
            interrupts.raise_pending()  # one that came during ask() cuts this trial short
            value = objective(trial)
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except (Exception, KeyboardInterrupt) as exc:
            state, error = TrialState.FAIL, exc
    with interrupts.held():
        if isinstance(error, KeyboardInterrupt):
            trial.set_user_attr(INTERRUPTED_ATTR, True)
            trial.set_user_attr("fail_reason", "interrupted (Ctrl-C or SIGTERM); requeued by "
                                "the next run")
        # as study.optimize tells: a value that is not a number fails the trial without a
        # warning (the trial line says so)
        _tell_with_warning(study, trial, value, state, suppress_warning=True)
    if error is not None and not isinstance(error, catch):
        raise error
    interrupts.raise_pending()  # one that came during the tell: stop, this trial is stored
    return study._storage.get_trial(trial._trial_id)  # uncopied: callbacks only read it


def heartbeat_for(storage: optuna.storages.BaseStorage) -> Heartbeat:
    """Optuna's heartbeats where the storage keeps them (relational), else the attribute's."""
    if isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage):
        return Heartbeat(storage, storage.get_heartbeat_interval())  # type: ignore[arg-type]
    return Heartbeat(AttrBeats(storage), heartbeat_s())


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the trials whose worker stopped beating, each with a `fail_reason` saying whose
    and since when, and queue their retries."""
    storage = study._storage
    if not isinstance(storage, BaseHeartbeat) or not is_heartbeat_enabled(storage):
        fail_silent_trials(study, grace_s())
        return
    stale = storage._get_stale_trial_ids(study._study_id)
    if stale:
        beats, _ = read_heartbeats(storage)
        for trial_id in stale:
            trial = storage.get_trial(trial_id)
            try:  # written with the FAIL below, in its transaction (batched storage)
                storage.set_trial_user_attr(trial_id, "fail_reason",
                                            stale_reason(trial, beats.get(trial_id)))
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another worker failed it first
    with warnings.catch_warnings():  # "experimental" since Optuna 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
