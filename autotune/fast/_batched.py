"""A running trial's writes in batches: one transaction where Optuna makes one per value.

Optuna's RDBStorage commits every `suggest_*` param, every `set_user_attr` and every
`report` on its own: ~40 transactions for a 10-epoch trial, ~0.5-1.2 ms each on SQLite,
more over a network. Here those writes are kept in memory and written together, in one
transaction per trial:
  - every FLUSH_EVERY_S seconds, by a background thread, so the dashboard, `autotune.status`
    and other workers see a long trial's params and learning curve while it runs;
  - when the objective asks (`flush`), e.g. right after saving a checkpoint, so a stored
    checkpoint never holds epochs whose values are not stored;
  - when the trial finishes (complete, pruned, failed): in the transaction that stores the
    finished state.
Reads in this process see the buffered values at once. System attributes (pruner rungs,
artifact records) are batched the same way; heartbeats and new trials are written
immediately, as before.

Reads: the trials this process runs, and the one that just finished here, are served from
memory (other processes do not write to a running trial), so listing the study, which
samplers and pruners do every epoch and every trial, asks the database only for the ids of
the others and loads just those.

What a crash can lose: the last FLUSH_EVERY_S seconds of a running trial's values, which a
retried trial replays from its checkpoint anyway.
"""

from __future__ import annotations

import copy
import json
import sys
import threading
import time
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import optuna
import sqlalchemy
import sqlalchemy.orm
from optuna.distributions import BaseDistribution

# Optuna's own per-value writers (the *_without_commit methods) run here several to a
# transaction; these internals are unchanged from Optuna 3.0 to 5.0.
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState

from autotune import _env as env
from autotune.fast import _trial_sql as trial_sql
from autotune.fast._listing import ListingPolicy
from autotune.storage._resilient import ResilientRDBStorage, _retrying

FLUSH_EVERY_S = 1.0  # default of $AUTOTUNE_FLUSH_EVERY_S
# Past this many unfinished trials to list, Optuna's own query (with its fallback for long
# IN lists) is used as it is.
_MAX_IN_LIST = 500
_MAX_FINISHED_KEPT = 100  # finished trials kept for a listing that never came
_FRESH_BEAT_S = 1.0  # the loop's first beat is not written this soon after the creation's


@dataclass
class _Pending:
    """Writes to one trial not yet in the database, in arrival order per kind."""

    params: dict[str, tuple[float, BaseDistribution, BaseDistribution | None]] = field(
        default_factory=dict)
    user_attrs: dict[str, Any] = field(default_factory=dict)
    system_attrs: dict[str, Any] = field(default_factory=dict)
    intermediate_values: dict[int, float] = field(default_factory=dict)

    def apply_to(self, trial: FrozenTrial) -> FrozenTrial:
        """The trial as it will be once these writes are stored."""
        if self.params:
            params, distributions = dict(trial.params), dict(trial.distributions)
            for name, (internal, distribution, _) in self.params.items():
                params[name] = distribution.to_external_repr(internal)
                distributions[name] = distribution
            trial.params, trial.distributions = params, distributions
        if self.user_attrs:  # copies: a caller changing what it read changes nothing here
            trial.user_attrs = {**trial.user_attrs, **copy.deepcopy(self.user_attrs)}
        if self.system_attrs:
            trial.system_attrs = {**trial.system_attrs, **copy.deepcopy(self.system_attrs)}
        if self.intermediate_values:
            trial.intermediate_values = {**trial.intermediate_values,
                                         **self.intermediate_values}
        return trial


@dataclass
class _StoredKeys:
    """Keys of a trial's attribute and intermediate-value rows known to be in the database."""

    user_attrs: set[str]
    system_attrs: set[str]
    intermediate_values: set[int]


@dataclass
class _Own:
    """A running trial this process created (other processes do not write to it): the study
    it belongs to, the trial as created, every write since, and its rows known to be stored."""

    study_id: int
    created: FrozenTrial
    written: _Pending
    stored: _StoredKeys
    beat_at: float | None = None  # time.monotonic() of the heartbeat written at its creation
    # the study's claimed trials numbered below it (complete, pruned, running), counted in
    # its creation's transaction; None if not created here (a queued trial taken)
    claimed_before: int | None = None

    def current(self) -> FrozenTrial:
        """The trial as it is now: a copy, which the caller may change (param values,
        distributions and steps' values are not changed in place; attributes may be)."""
        t = self.created
        return self.written.apply_to(FrozenTrial(
            number=t.number, state=t.state, value=None, values=copy.copy(t.values),
            datetime_start=t.datetime_start, datetime_complete=t.datetime_complete,
            params=dict(t.params), distributions=dict(t.distributions),
            user_attrs=copy.deepcopy(t.user_attrs), system_attrs=copy.deepcopy(t.system_attrs),
            intermediate_values=dict(t.intermediate_values), trial_id=t._trial_id))


_Finish = tuple[TrialState, Any]  # the state a trial finishes in, and its values (or None)


def _as_stored(value: Any) -> Any:
    """The value as the database will give it back (JSON: tuples become lists), copied now, so
    later changes to the caller's object are not written; refuses what JSON cannot hold."""
    return json.loads(json.dumps(value))


def _put_bounded(kept: dict[int, Any], trial_id: int, value: Any) -> None:
    """kept[trial_id] = value, dropping the oldest entries past _MAX_FINISHED_KEPT: what a
    finished trial leaves for a later reader (a listing, the budget check) that may never
    come is not kept forever."""
    kept[trial_id] = value
    while len(kept) > _MAX_FINISHED_KEPT:
        del kept[next(iter(kept))]


def flush_every_s_from_env() -> float:
    """Seconds between background flushes: $AUTOTUNE_FLUSH_EVERY_S (> 0), else FLUSH_EVERY_S."""
    return env.seconds("AUTOTUNE_FLUSH_EVERY_S", FLUSH_EVERY_S, positive=True)


class BatchedRDBStorage(ResilientRDBStorage):
    """RDB storage (with ResilientRDBStorage's reconnects) that batches a trial's writes."""

    def __init__(self, *args: Any, flush_every_s: float | None = None, **kwargs: Any) -> None:
        # settings from the environment are read before connecting: a bad one touches nothing
        if flush_every_s is None:
            flush_every_s = flush_every_s_from_env()
        listing = ListingPolicy()
        super().__init__(*args, **kwargs)
        self._pending: dict[int, _Pending] = {}  # buffered, per trial id
        self._in_flight: dict[int, _Pending] = {}  # being written right now
        # running trials created here, read without a query (~1.5 ms, 3-4 times a trial)
        self._own: dict[int, _Own] = {}
        # trials that finished here, as stored, until a listing asks for them: (study id, trial)
        self._finished: dict[int, tuple[int, FrozenTrial]] = {}
        # the study's claimed trials counted in the transaction that finished a trial here,
        # until the budget check asks (`claimed_at_finish`)
        self._claimed_at_finish: dict[int, int] = {}
        self._pending_lock = threading.Lock()  # guards the dicts above
        self._flush_lock = threading.Lock()  # one flush at a time: writes keep their order
        self._flush_every_s = flush_every_s
        self._flusher: threading.Thread | None = None
        self._listing = listing  # when listings may leave other processes out

    # --- buffered writes ----------------------------------------------------------------

    def _set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                         distribution: BaseDistribution,
                         previous_distribution: BaseDistribution | None) -> None:
        self._buffer(trial_id, lambda p: p.params.__setitem__(
            param_name, (param_value_internal, distribution, previous_distribution)))

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        stored = _as_stored(value)
        self._buffer(trial_id, lambda p: p.user_attrs.__setitem__(key, stored))

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        stored = _as_stored(value)
        self._buffer(trial_id, lambda p: p.system_attrs.__setitem__(key, stored))

    def set_trial_intermediate_value(self, trial_id: int, step: int,
                                     intermediate_value: float) -> None:
        self._buffer(trial_id, lambda p: p.intermediate_values.__setitem__(
            step, intermediate_value))

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Any = None) -> bool:
        """A finished state is written in the transaction that stores the trial's last
        buffered writes (one commit instead of two), and the finished trial is kept to answer
        the next listing (Optuna's check for queued trials reads it back right away)."""
        if not state.is_finished():  # WAITING -> RUNNING (a queued trial taken): as Optuna does
            self.flush(trial_id)
            taken = bool(super().set_trial_state_values(trial_id, state, values))
            if taken and state == TrialState.RUNNING:
                self._run_here(super().get_trial(trial_id))  # as stored, start time included
            return taken
        try:
            with self._flush_lock:
                try:
                    stored = self._flush_one(trial_id, finish=(state, values))
                except sqlalchemy.exc.IntegrityError:  # as RDBStorage: lost a race, not stored
                    return False
            self._remember_finished(trial_id, state, values, stored)
            return True
        finally:  # finished, or refused because another worker finished it: read it anew
            with self._pending_lock:
                self._own.pop(trial_id, None)

    def _remember_finished(self, trial_id: int, state: TrialState, values: Any,
                           stored: tuple[datetime, datetime] | None) -> None:
        with self._pending_lock:
            own = self._own.get(trial_id)
            if own is None or stored is None:
                return
            trial = own.current()
            trial.state = state
            trial.values = None if values is None else [float(v) for v in values]
            trial.datetime_start, trial.datetime_complete = stored
            _put_bounded(self._finished, trial_id, (own.study_id, trial))

    # --- the trials this process created: read without asking the database --------------

    def _create_new_trial(self, study_id: int,
                          template_trial: FrozenTrial | None = None) -> FrozenTrial:
        claimed_before = None
        if template_trial is None:
            created, beat_at, claimed_before = self._create_running_trial(study_id)
        else:
            created, beat_at = super()._create_new_trial(study_id, template_trial), None
        self._listing.created(study_id, created.number)
        if created.state == TrialState.RUNNING:
            self._run_here(created, study_id, beat_at, claimed_before)
        return created

    def _run_here(self, trial: FrozenTrial, study_id: int | None = None,
                  beat_at: float | None = None, claimed_before: int | None = None) -> None:
        """Serve a running trial this process runs (created here, or a queued one it took)
        from memory from now on: no other process writes to it."""
        if study_id is None:
            with self.engine.connect() as connection:
                study_id = trial_sql.study_of(connection, trial._trial_id)
        # the rows a template gave it: the only ones a write may have to replace so far
        stored = _StoredKeys(set(trial.user_attrs), set(trial.system_attrs),
                             set(trial.intermediate_values))
        with self._pending_lock:
            self._own[trial._trial_id] = _Own(study_id, copy.deepcopy(trial), _Pending(), stored,
                                              beat_at, claimed_before)

    @_retrying
    def _create_running_trial(self, study_id: int
                              ) -> tuple[FrozenTrial, float | None, int]:
        """A new running trial, as RDBStorage._create_new_trial creates one without a
        template, in plain statements (trial_sql) instead of the ORM's unit of work; with
        heartbeats on, its first heartbeat in the same transaction. Returns the trial, when
        that heartbeat was written (time.monotonic()) and the study's claimed trials numbered
        below it, counted in the same transaction (the budget's surplus check: no
        transaction of its own)."""
        beat_at = None
        with _create_scoped_session(self.scoped_session) as session:
            connection = session.connection()
            trial_id, number, start = trial_sql.create_running_trial(connection, study_id)
            claimed_before = trial_sql.count_claimed(connection, study_id, before=number)
            if self.heartbeat_interval:
                trial_sql.first_heartbeat(connection, trial_id)
                beat_at = time.monotonic()
        return FrozenTrial(number=number, state=TrialState.RUNNING, value=None, values=None,
                           datetime_start=start, datetime_complete=None, params={},
                           distributions={}, user_attrs={}, system_attrs={},
                           intermediate_values={}, trial_id=trial_id), beat_at, claimed_before

    @_retrying
    def record_heartbeat(self, trial_id: int) -> None:
        """As RDBStorage.record_heartbeat (the database's clock), in plain statements. The
        first call within a second of the beat written when the trial was created here writes
        nothing (the trial loop beats as it starts a trial: a beat that recent says the same)."""
        with self._pending_lock:
            own = self._own.get(trial_id)
            beat_at = None if own is None else own.beat_at
            if own is not None:
                own.beat_at = None  # only the first call is spared
        if beat_at is not None and time.monotonic() - beat_at < _FRESH_BEAT_S:
            return
        with self.engine.begin() as connection:
            trial_sql.record_heartbeat(connection, trial_id)

    # --- reads see the buffer -----------------------------------------------------------

    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._pending_lock:
            own = self._own.get(trial_id)
            if own is not None:  # running here: as created, plus every write made since
                return own.current()
            finished = self._finished.get(trial_id)
            if finished is not None:  # finished here just now (Optuna's tell reads it back);
                return finished[1]  # not copied: finished trials are shared, as in Optuna's cache
        return self._with_pending(super().get_trial(trial_id))

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:
        return self.get_trial(trial_id).system_attrs  # from memory for trials running here

    def _get_trials(self, study_id: int, states: Container[TrialState] | None,
                    included_trial_ids: set[int], trial_id_greater_than: int
                    ) -> list[FrozenTrial]:
        """What Optuna's cache asks each time a sampler or pruner lists the trials (once per
        epoch and ~3 times per trial): the unfinished trials and those newer than the last
        finished one. Optuna answers with one ORM query of 6 statements, ~1.5-4 ms on SQLite
        here even when it finds nothing. Here one plain SELECT of ids says what there is; the
        trials running in this process come from memory, and only the others are loaded; and
        within LIST_EVERY_S of the last such SELECT, mostly, memory alone answers (see
        autotune.fast._listing for when)."""
        started_at = time.monotonic()
        if trial_id_greater_than < 0 or len(included_trial_ids) > _MAX_IN_LIST:
            # the first read of a study (every trial), or very many unfinished trials
            trials = [self._with_pending(t) for t in super()._get_trials(
                study_id, states, included_trial_ids, trial_id_greater_than)]
            if states is None:
                self._listing.asked_database(study_id, (t.number for t in trials), started_at)
            return trials

        def wanted(trial_id: int, trial: FrozenTrial) -> bool:
            return ((trial_id in included_trial_ids or trial_id > trial_id_greater_than)
                    and (states is None or trial.state in states))

        with self._pending_lock:
            own = {trial_id: running.current() for trial_id, running in self._own.items()
                   if running.study_id == study_id and wanted(trial_id, running.created)}
            for trial_id, (finished_study, trial) in list(self._finished.items()):
                if finished_study == study_id and wanted(trial_id, trial):
                    own[trial_id] = trial  # handed over: Optuna's cache keeps it from now on
                    del self._finished[trial_id]
        if states is None and self._listing.may_skip_database(study_id):
            return sorted(own.values(), key=lambda t: t._trial_id)  # see autotune.fast._listing
        others = self._trial_ids(study_id, states, included_trial_ids - set(own),
                                 trial_id_greater_than, exclude=set(own), must_exist=not own)
        loaded = [self._with_pending(t) for t in self._load_trials(others)] if others else []
        listed = sorted(loaded + list(own.values()), key=lambda t: t._trial_id)
        if states is None:
            self._listing.asked_database(study_id, (t.number for t in listed), started_at)
        return listed

    @_retrying
    def _trial_ids(self, study_id: int, states: Container[TrialState] | None,
                   included_trial_ids: set[int], trial_id_greater_than: int,
                   exclude: set[int], must_exist: bool) -> list[int]:
        """Ids of the study's trials in `states` (None: any) that are in `included_trial_ids`
        or newer than `trial_id_greater_than`, less `exclude`; KeyError if `must_exist` and
        the study does not (as Optuna's own listing)."""
        included = [i for i in included_trial_ids if i <= trial_id_greater_than]
        with self.engine.connect() as connection:
            ids = trial_sql.list_trial_ids(connection, study_id, states,  # type: ignore[arg-type]
                                           included, trial_id_greater_than, exclude)
            if not ids and must_exist and not trial_sql.study_exists(connection, study_id):
                raise KeyError(f"No study with study_id {study_id} exists.")
        return ids

    @_retrying
    def _load_trials(self, trial_ids: list[int]) -> list[FrozenTrial]:
        """These trials, read whole as RDBStorage._get_trials reads them."""
        trial = models.TrialModel
        with _create_scoped_session(self.scoped_session) as session:
            query = session.query(trial).options(
                *(sqlalchemy.orm.selectinload(getattr(trial, relation)) for relation in (
                    "params", "values", "user_attributes", "system_attributes",
                    "intermediate_values"))
            ).filter(trial.trial_id.in_(trial_ids)).order_by(trial.trial_id)
            return [self._build_frozen_trial_from_trial_model(t) for t in query.all()]

    def _with_pending(self, trial: FrozenTrial) -> FrozenTrial:
        with self._pending_lock:
            for writes in (self._in_flight, self._pending):
                pending = writes.get(trial._trial_id)
                if pending is not None:
                    trial = pending.apply_to(trial)
        return trial

    @_retrying
    def count_claimed(self, study_id: int, before: int | None = None) -> int:
        """Finished (complete or pruned) trials plus running ones numbered below `before`
        (all running ones if None): one COUNT query instead of reading every trial."""
        with self.engine.connect() as connection:
            return trial_sql.count_claimed(connection, study_id, before)

    def claimed_at_creation(self, trial_id: int) -> int | None:
        """count_claimed(its study, before=its number) as counted in the transaction that
        created this running trial here; None for a trial not created here."""
        with self._pending_lock:
            own = self._own.get(trial_id)
            return None if own is None else own.claimed_before

    def claimed_at_finish(self, trial_id: int) -> int | None:
        """count_claimed(its study) as counted in the transaction that finished this trial
        here (once: the count is dropped as it is read); None if it did not finish here."""
        with self._pending_lock:
            return self._claimed_at_finish.pop(trial_id, None)

    # --- flushing -----------------------------------------------------------------------

    def flush(self, trial_id: int | None = None) -> None:
        """Write what is buffered for `trial_id` (None: every trial), one transaction each.

        Raises what the database raised (e.g. UpdateFinishedTrialError when another worker
        declared the trial dead); the writes then stay buffered."""
        with self._flush_lock:
            with self._pending_lock:
                ids = list(self._pending) if trial_id is None else [trial_id]
            for i in ids:
                self._flush_one(i)

    def _flush_one(self, trial_id: int, finish: _Finish | None = None
                   ) -> tuple[datetime, datetime] | None:
        """Write what is buffered for the trial (and finish it, if asked) in one transaction;
        the caller holds _flush_lock. Returns the stored start and end times of a finish."""
        with self._pending_lock:
            pending = self._pending.pop(trial_id, None)
            if pending is None:
                if finish is None:
                    return None
                pending = _Pending()
            self._in_flight[trial_id] = pending  # still visible to reads while written
        try:
            return self._write(trial_id, pending, finish)
        except BaseException:
            with self._pending_lock:  # keep them, under what arrived meanwhile
                newer = self._pending.get(trial_id)
                if newer is not None:
                    pending.params.update(newer.params)
                    pending.user_attrs.update(newer.user_attrs)
                    pending.system_attrs.update(newer.system_attrs)
                    pending.intermediate_values.update(newer.intermediate_values)
                self._pending[trial_id] = pending
            raise
        finally:
            with self._pending_lock:
                self._in_flight.pop(trial_id, None)

    @_retrying
    def _write(self, trial_id: int, pending: _Pending, finish: _Finish | None = None
               ) -> tuple[datetime, datetime] | None:
        """One transaction: the trial checked once, then per table a delete of the keys that
        may already be stored and one multi-row insert (an upsert of them all at once: no
        other process writes a running trial's rows); with `finish`, last, its values and
        finished state, on the condition that it is still unfinished (which checks it: the
        transaction is rolled back otherwise). Returns the stored start and end times of a
        trial created and finished here."""
        with self._pending_lock:
            own = self._own.get(trial_id)
        known = own.stored if own else None  # None: not created here, may have any rows
        with _create_scoped_session(self.scoped_session) as session:
            connection = session.connection()  # plain statements: no ORM bookkeeping per row
            if finish is None:  # with `finish`, finishing it checks it (and locks its row)
                self.check_trial_is_updatable(trial_id,
                                              trial_sql.trial_state(connection, trial_id))
            params = []
            for name, (internal, distribution, previous) in pending.params.items():
                if previous is None:  # the first of its name in this process: check the study
                    self._set_trial_param_without_commit(session, trial_id, name, internal,
                                                         distribution, None)
                    continue
                optuna.distributions.check_distribution_compatibility(previous, distribution)
                params.append({"trial_id": trial_id, "param_name": name,
                               "param_value": internal, "distribution_json":
                               optuna.distributions.distribution_to_json(distribution)})
            trial_sql.insert_params(connection, params)
            for system, attrs, stored in (
                    (False, pending.user_attrs, None if known is None else known.user_attrs),
                    (True, pending.system_attrs, None if known is None else known.system_attrs)):
                trial_sql.replace_attrs(connection, trial_id, system, attrs, attrs if (
                    stored is None) else (k for k in attrs if k in stored))
            values = pending.intermediate_values
            stored_steps = None if known is None else known.intermediate_values
            trial_sql.replace_intermediate_values(connection, trial_id, values, values if (
                stored_steps is None) else (step for step in values if step in stored_steps))
            times = None
            claimed = None  # the study's claimed trials once this one is finished
            if finish is not None:
                complete = trial_sql.finish(connection, trial_id, *finish,
                                            may_have_values=own is None or (
                                                own.created.values is not None))
                if complete is None:  # finished meanwhile (declared dead?), or missing
                    self.check_trial_is_updatable(trial_id,
                                                  trial_sql.trial_state(connection, trial_id))
                    raise AssertionError(f"trial id {trial_id} is unfinished yet not finished")
                if own is not None:
                    times = ((own.created.datetime_start, complete)
                             if trial_sql.keeps_microseconds(connection.dialect)
                             else trial_sql.stored_times(connection, trial_id))
                    # for the budget's stop check, which then needs no transaction of its own
                    claimed = trial_sql.count_claimed(connection, own.study_id, None)
        if claimed is not None:  # committed
            with self._pending_lock:
                _put_bounded(self._claimed_at_finish, trial_id, claimed)
        if known is not None:  # committed: these rows exist now
            known.user_attrs.update(pending.user_attrs)
            known.system_attrs.update(pending.system_attrs)
            known.intermediate_values.update(values)
        return times  # type: ignore[return-value]

    def _buffer(self, trial_id: int, add: Callable[[_Pending], None]) -> None:
        with self._pending_lock:
            pending = self._pending.get(trial_id)
            if pending is None:
                pending = self._pending[trial_id] = _Pending()
            add(pending)
            own = self._own.get(trial_id)
            if own is not None:
                add(own.written)
        if self._flusher is None:
            self._start_flusher()

    def _start_flusher(self) -> None:
        with self._pending_lock:
            if self._flusher is not None:
                return
            self._flusher = threading.Thread(target=self._flush_periodically, daemon=True,
                                             name="autotune-flush")
        self._flusher.start()

    def _flush_periodically(self) -> None:
        while True:  # a daemon thread: it ends with the process
            time.sleep(self._flush_every_s)
            with self._pending_lock:
                ids = list(self._pending)
            for trial_id in ids:
                try:
                    with self._flush_lock:
                        self._flush_one(trial_id)
                except optuna.exceptions.UpdateFinishedTrialError:
                    with self._pending_lock:  # declared dead by another worker: drop them
                        self._pending.pop(trial_id, None)
                except Exception as exc:  # the trial's own flush will raise it, if it stays
                    print(f"storage: background write of trial id {trial_id} failed ({exc}); "
                          "retrying", file=sys.stderr, flush=True)


def batched_backend(storage: optuna.storages.BaseStorage) -> BatchedRDBStorage | None:
    """The BatchedRDBStorage behind a study's storage (Optuna wraps it in a cache), or None."""
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, BatchedRDBStorage) else None


def flush_trial(trial: optuna.Trial) -> None:
    """Store now what is buffered for a running trial (nothing to do on other storages)."""
    backend = batched_backend(trial.study._storage)
    if backend is not None:
        backend.flush(trial._trial_id)
