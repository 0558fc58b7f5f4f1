"""The plain SQL statements the batched storage sends, built once, on Optuna's own tables.

Each function runs inside the caller's transaction (a SQLAlchemy connection) and writes rows
exactly as Optuna's RDBStorage writes them (its models' columns and stored forms), so any
Optuna reader, the dashboard included, sees the same study. Built once because building a
statement (SQLAlchemy's expression objects) cost as much as sending it; SQLAlchemy caches
the compiled form of each.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy
from optuna.storages._rdb import models
from optuna.storages._rdb.models import NOT_FOUND_MSG
from optuna.trial import TrialState
from sqlalchemy import bindparam, func, select

_TRIALS = models.TrialModel.__table__
_STUDIES = models.StudyModel.__table__
_BEATS = models.TrialHeartbeatModel.__table__
_PARAMS = models.TrialParamModel.__table__
_USER_ATTRS = models.TrialUserAttributeModel.__table__
_SYSTEM_ATTRS = models.TrialSystemAttributeModel.__table__
_STEPS = models.TrialIntermediateValueModel.__table__
_VALUES = models.TrialValueModel.__table__
_UNFINISHED = (TrialState.RUNNING, TrialState.WAITING)
_CLAIMING = (TrialState.COMPLETE, TrialState.PRUNED)

_LOCK_STUDY = select(_STUDIES.c.study_id).where(
    _STUDIES.c.study_id == bindparam("b_study_id")).with_for_update()
_INSERT_TRIAL = sqlalchemy.insert(_TRIALS).values(
    study_id=bindparam("b_study_id"), number=None, state=TrialState.RUNNING,
    datetime_start=bindparam("b_start"))
_COUNT_BEFORE = select(func.count(_TRIALS.c.trial_id)).where(
    _TRIALS.c.study_id == bindparam("b_study_id"), _TRIALS.c.trial_id < bindparam("b_trial_id"))
_SET_NUMBER = sqlalchemy.update(_TRIALS).where(
    _TRIALS.c.trial_id == bindparam("b_trial_id")).values(number=bindparam("b_number"))
_STUDY_OF = select(_TRIALS.c.study_id).where(_TRIALS.c.trial_id == bindparam("b_trial_id"))
_STATE = select(_TRIALS.c.state).where(_TRIALS.c.trial_id == bindparam("b_trial_id"))
_TIMES = select(_TRIALS.c.datetime_start, _TRIALS.c.datetime_complete).where(
    _TRIALS.c.trial_id == bindparam("b_trial_id"))
_FINISH = sqlalchemy.update(_TRIALS).where(
    _TRIALS.c.trial_id == bindparam("b_trial_id"), _TRIALS.c.state.in_(_UNFINISHED)).values(
        state=bindparam("b_new_state"), datetime_complete=bindparam("b_complete"))
_BEAT = sqlalchemy.update(_BEATS).where(_BEATS.c.trial_id == bindparam("b_trial_id")).values(
    heartbeat=func.current_timestamp())
_FIRST_BEAT = sqlalchemy.insert(_BEATS).values(trial_id=bindparam("b_trial_id"),
                                               heartbeat=func.current_timestamp())
_DELETE_VALUES = sqlalchemy.delete(_VALUES).where(_VALUES.c.trial_id == bindparam("b_trial_id"))
_COUNT_CLAIMED = select(func.count(_TRIALS.c.trial_id)).where(
    _TRIALS.c.study_id == bindparam("b_study_id"), sqlalchemy.or_(
        _TRIALS.c.state.in_(_CLAIMING), _TRIALS.c.state == TrialState.RUNNING))
_COUNT_CLAIMED_BEFORE = select(func.count(_TRIALS.c.trial_id)).where(
    _TRIALS.c.study_id == bindparam("b_study_id"), sqlalchemy.or_(
        _TRIALS.c.state.in_(_CLAIMING), sqlalchemy.and_(
            _TRIALS.c.state == TrialState.RUNNING, _TRIALS.c.number < bindparam("b_before"))))
_LIST_IDS = select(_TRIALS.c.trial_id).where(
    _TRIALS.c.study_id == bindparam("b_study_id"),
    sqlalchemy.or_(_TRIALS.c.trial_id.in_(bindparam("b_included", expanding=True)),
                   _TRIALS.c.trial_id > bindparam("b_after")),
    _TRIALS.c.state.in_(bindparam("b_states", expanding=True)),
    _TRIALS.c.trial_id.not_in(bindparam("b_exclude", expanding=True)),
).order_by(_TRIALS.c.trial_id)
_STUDY_EXISTS = select(_STUDIES.c.study_id).where(_STUDIES.c.study_id == bindparam("b_study_id"))
_INSERTS = {table.name: sqlalchemy.insert(table) for table in (
    _PARAMS, _USER_ATTRS, _SYSTEM_ATTRS, _STEPS, _VALUES)}


def create_running_trial(connection: sqlalchemy.Connection, study_id: int
                         ) -> tuple[int, int, datetime]:
    """Insert a running trial as RDBStorage._create_new_trial does without a template: the
    study's row locked while the trials before it are counted for its number. Returns its id,
    number and start time (naive local time, as Optuna reads it)."""
    if connection.scalar(_LOCK_STUDY, {"b_study_id": study_id}) is None:
        raise KeyError(NOT_FOUND_MSG)
    start = datetime.now()
    inserted = connection.execute(_INSERT_TRIAL, {"b_study_id": study_id,
                                                  "b_start": to_utc(start)})
    trial_id = int(inserted.inserted_primary_key[0])  # type: ignore[index]
    number = int(connection.scalar(_COUNT_BEFORE, {"b_study_id": study_id,
                                                   "b_trial_id": trial_id}) or 0)
    connection.execute(_SET_NUMBER, {"b_trial_id": trial_id, "b_number": number})
    return trial_id, number, start


def first_heartbeat(connection: sqlalchemy.Connection, trial_id: int) -> None:
    """The heartbeat row of a trial that has none yet (one just created)."""
    connection.execute(_FIRST_BEAT, {"b_trial_id": trial_id})


def record_heartbeat(connection: sqlalchemy.Connection, trial_id: int) -> None:
    """The trial's heartbeat row set to the database's clock, as RDBStorage.record_heartbeat."""
    if not connection.execute(_BEAT, {"b_trial_id": trial_id}).rowcount:
        connection.execute(_FIRST_BEAT, {"b_trial_id": trial_id})


def count_claimed(connection: sqlalchemy.Connection, study_id: int, before: int | None) -> int:
    """Complete and pruned trials, plus running ones (numbered below `before`, if given)."""
    if before is None:
        return int(connection.scalar(_COUNT_CLAIMED, {"b_study_id": study_id}) or 0)
    return int(connection.scalar(_COUNT_CLAIMED_BEFORE, {"b_study_id": study_id,
                                                         "b_before": before}) or 0)


def list_trial_ids(connection: sqlalchemy.Connection, study_id: int,
                   states: Iterable[TrialState] | None, included: Iterable[int], after: int,
                   exclude: Iterable[int]) -> list[int]:
    """Ids of the study's trials in `states` (None: any) that are in `included` or newer than
    `after`, less `exclude`, in order."""
    return list(connection.scalars(_LIST_IDS, {
        "b_study_id": study_id, "b_included": list(included), "b_after": after,
        "b_states": list(TrialState if states is None else states),
        "b_exclude": list(exclude)}))


def study_exists(connection: sqlalchemy.Connection, study_id: int) -> bool:
    return connection.scalar(_STUDY_EXISTS, {"b_study_id": study_id}) is not None


def study_of(connection: sqlalchemy.Connection, trial_id: int) -> int:
    """The id of the study the trial belongs to; KeyError (as Optuna's) if there is none."""
    study_id = connection.scalar(_STUDY_OF, {"b_trial_id": trial_id})
    if study_id is None:
        raise KeyError(NOT_FOUND_MSG)
    return int(study_id)


def trial_state(connection: sqlalchemy.Connection, trial_id: int) -> TrialState:
    """The trial's stored state; KeyError (as Optuna's) if there is no such trial."""
    state = connection.scalar(_STATE, {"b_trial_id": trial_id})
    if state is None:
        raise KeyError(NOT_FOUND_MSG)
    return TrialState(state)


def insert_params(connection: sqlalchemy.Connection, rows: list[dict[str, Any]]) -> None:
    """Param rows: trial_id, param_name, param_value (internal), distribution_json."""
    if rows:
        connection.execute(_INSERTS[_PARAMS.name], rows)


def replace_attrs(connection: sqlalchemy.Connection, trial_id: int, system: bool,
                  attrs: Mapping[str, Any], replaced: Iterable[str]) -> None:
    """Store user (or system) attributes, deleting first the keys in `replaced` (those that
    may be stored already)."""
    if not attrs:
        return
    table = _SYSTEM_ATTRS if system else _USER_ATTRS
    replaced = list(replaced)
    if replaced:
        connection.execute(sqlalchemy.delete(table).where(
            table.c.trial_id == trial_id, table.c.key.in_(replaced)))
    connection.execute(_INSERTS[table.name], [
        {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
        for key, value in attrs.items()])


def replace_intermediate_values(connection: sqlalchemy.Connection, trial_id: int,
                                values: Mapping[int, float], replaced: Iterable[int]) -> None:
    """Store per-step values (NaN and infinities in Optuna's stored form), deleting first
    the steps in `replaced`."""
    if not values:
        return
    replaced = list(replaced)
    if replaced:
        connection.execute(sqlalchemy.delete(_STEPS).where(
            _STEPS.c.trial_id == trial_id, _STEPS.c.step.in_(replaced)))
    to_stored = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr
    rows = []
    for step, value in values.items():
        stored, value_type = to_stored(value)
        rows.append({"trial_id": trial_id, "step": step, "intermediate_value": stored,
                     "intermediate_value_type": value_type})
    connection.execute(_INSERTS[_STEPS.name], rows)


def finish(connection: sqlalchemy.Connection, trial_id: int, state: TrialState,
           values: Iterable[float] | None, *, may_have_values: bool) -> datetime | None:
    """Set an unfinished trial's finished state and end time, and store its objective values
    (deleting stored ones first if `may_have_values`), as set_trial_state_values does.
    Returns the end time (naive local time), or None, storing nothing, if the trial is
    finished already (or missing)."""
    complete = datetime.now()
    if not connection.execute(_FINISH, {"b_trial_id": trial_id, "b_new_state": state,
                                        "b_complete": to_utc(complete)}).rowcount:
        return None
    if values is not None:
        if may_have_values:
            connection.execute(_DELETE_VALUES, {"b_trial_id": trial_id})
        to_stored = models.TrialValueModel.value_to_stored_repr
        rows = []
        for objective, value in enumerate(values):
            stored_value, value_type = to_stored(value)
            rows.append({"trial_id": trial_id, "objective": objective, "value": stored_value,
                         "value_type": value_type})
        if rows:
            connection.execute(_INSERTS[_VALUES.name], rows)
    return complete


def stored_times(connection: sqlalchemy.Connection, trial_id: int
                 ) -> tuple[datetime, datetime | None]:
    """The trial's start and end times as stored, in naive local time."""
    start, complete = connection.execute(_TIMES, {"b_trial_id": trial_id}).one()
    return from_utc(start), None if complete is None else from_utc(complete)


def keeps_microseconds(dialect: sqlalchemy.Dialect) -> bool:
    """Whether the database stores Optuna's times with their microseconds (MySQL's and
    MariaDB's DATETIME, as Optuna creates it, keeps whole seconds)."""
    return dialect.name in ("sqlite", "postgresql")


def to_utc(local: datetime) -> datetime:
    """A naive local time as Optuna stores it: naive UTC (models.TrialModel.datetime_start)."""
    return local.astimezone(UTC).replace(tzinfo=None)


def from_utc(stored: datetime) -> datetime:
    """A stored naive UTC time as Optuna reads it back: naive local time."""
    return stored.replace(tzinfo=UTC).astimezone().replace(tzinfo=None)
