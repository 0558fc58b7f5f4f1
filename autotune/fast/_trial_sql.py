"""The plain SQL statements the batched storage sends, built once, on Optuna's own tables.

Each function runs inside the caller's transaction (a SQLAlchemy connection) and writes rows
exactly as Optuna's RDBStorage writes them (its models' columns and stored forms), so any
Optuna reader, the dashboard included, sees the same study. Built once because building a
statement (SQLAlchemy's expression objects) cost as much as sending it; SQLAlchemy caches
the compiled form of each.

On SQLite the statements of a trial's creation and finish go straight to the sqlite3 cursor
of the caller's connection, in its transaction: each compiled once with SQLAlchemy's own
SQLite compiler and its own type conversions (`_Compiled`), so the SQL and the stored values
are those SQLAlchemy would send. SQLAlchemy's execution path around a statement costs ~3x
the statement itself there (19 against 5-8 us here): ~1 ms a trial on SQLite's fast path.
Other databases take SQLAlchemy's path, whose per-statement cost is small beside a network
round trip.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

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


def _state_is(*states: TrialState) -> sqlalchemy.ColumnElement[bool]:
    """state = a OR state = b: the IN of a fixed list, in plain parameters (an IN list is
    expanded by SQLAlchemy at each execution, which the direct SQLite path does not do)."""
    return sqlalchemy.or_(*(_TRIALS.c.state == state for state in states))


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
    _TRIALS.c.trial_id == bindparam("b_trial_id"), _state_is(*_UNFINISHED)).values(
        state=bindparam("b_new_state"), datetime_complete=bindparam("b_complete"))
_BEAT = sqlalchemy.update(_BEATS).where(_BEATS.c.trial_id == bindparam("b_trial_id")).values(
    heartbeat=func.current_timestamp())
_FIRST_BEAT = sqlalchemy.insert(_BEATS).values(trial_id=bindparam("b_trial_id"),
                                               heartbeat=func.current_timestamp())
_DELETE_VALUES = sqlalchemy.delete(_VALUES).where(_VALUES.c.trial_id == bindparam("b_trial_id"))
_COUNT_CLAIMED = select(func.count(_TRIALS.c.trial_id)).where(
    _TRIALS.c.study_id == bindparam("b_study_id"), sqlalchemy.or_(
        _state_is(*_CLAIMING), _TRIALS.c.state == TrialState.RUNNING))
_COUNT_CLAIMED_BEFORE = select(func.count(_TRIALS.c.trial_id)).where(
    _TRIALS.c.study_id == bindparam("b_study_id"), sqlalchemy.or_(
        _state_is(*_CLAIMING), sqlalchemy.and_(
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


class _Compiled(NamedTuple):
    """A statement as SQLAlchemy compiles it for one dialect with a positional paramstyle:
    the SQL, and per parameter its name, its value if the statement holds one, and the
    conversion SQLAlchemy applies to a value of its type (None: none)."""

    sql: str
    names: tuple[str, ...]
    held: tuple[Any, ...]
    converts: tuple[Callable[[Any], Any] | None, ...]

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        out = []
        for name, held, convert in zip(self.names, self.held, self.converts, strict=True):
            value = values.get(name, held)
            out.append(value if convert is None or value is None else convert(value))
        return tuple(out)


_COMPILED: dict[tuple[int, int, tuple[str, ...] | None], _Compiled] = {}


def _compiled(statement: sqlalchemy.Executable, dialect: sqlalchemy.Dialect,
              columns: tuple[str, ...] | None = None) -> _Compiled:
    """`statement` (one of this module's, which live as long as the process) compiled for
    `dialect`, once; `columns`: the columns an INSERT of rows sets."""
    key = (id(statement), id(dialect), columns)
    found = _COMPILED.get(key)
    if found is None:
        compiled = statement.compile(dialect=dialect, column_keys=columns)  # type: ignore[attr-defined]
        names = tuple(compiled.positiontup or ())
        binds = [compiled.binds[name] for name in names]
        found = _COMPILED[key] = _Compiled(
            compiled.string, names, tuple(b.value for b in binds),
            tuple(b.type.dialect_impl(dialect).bind_processor(dialect) for b in binds))
    return found


def _direct(connection: sqlalchemy.Connection) -> bool:
    """Whether statements go straight to the connection's sqlite3 cursor."""
    return connection.dialect.name == "sqlite" and connection.dialect.paramstyle == "qmark"


def _cursor(connection: sqlalchemy.Connection, statement: sqlalchemy.Executable,
            values: Mapping[str, Any]) -> Any:
    """Run the statement on the sqlite3 connection under `connection`, in its transaction."""
    compiled = _compiled(statement, connection.dialect)
    return _on_driver(connection, "execute", compiled.sql, compiled.parameters(values))


def _on_driver(connection: sqlalchemy.Connection, method: str, sql: str,
               parameters: Any) -> Any:
    """The driver connection's `method` (execute, executemany); a driver error is raised as
    SQLAlchemy raises it (sqlalchemy.exc.OperationalError for a lock held too long,
    IntegrityError for a lost race, ...), so the callers' retries, rollbacks and races work
    as on SQLAlchemy's path."""
    driver = connection.connection.driver_connection
    dbapi_error = connection.dialect.loaded_dbapi.Error
    try:
        return getattr(driver, method)(sql, parameters)
    except dbapi_error as exc:
        raise sqlalchemy.exc.DBAPIError.instance(  # type: ignore[misc]
            sql, parameters, exc, dbapi_error, dialect=connection.dialect) from exc


def _execute(connection: sqlalchemy.Connection, statement: sqlalchemy.Executable,
             values: Mapping[str, Any]) -> int:
    """Run an INSERT, UPDATE or DELETE; returns its row count."""
    if _direct(connection):
        return int(_cursor(connection, statement, values).rowcount)
    return int(connection.execute(statement, values).rowcount)  # type: ignore[attr-defined]


def _insert(connection: sqlalchemy.Connection, statement: sqlalchemy.Executable,
            values: Mapping[str, Any]) -> int:
    """Run an INSERT of one row; returns the row's new primary key."""
    if _direct(connection):
        return int(_cursor(connection, statement, values).lastrowid)
    inserted = connection.execute(statement, values)
    return int(inserted.inserted_primary_key[0])  # type: ignore[attr-defined,index]


def _count(connection: sqlalchemy.Connection, statement: sqlalchemy.Executable,
           values: Mapping[str, Any]) -> int:
    """Run a SELECT of one number (a count, an id); 0 for no row or NULL."""
    if _direct(connection):
        row = _cursor(connection, statement, values).fetchone()
        return int(row[0] or 0) if row else 0
    return int(connection.scalar(statement, values) or 0)


def _insert_rows(connection: sqlalchemy.Connection, table: sqlalchemy.Table,
                 rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT rows that all set the same columns, in one executemany."""
    statement = _INSERTS[table.name]
    if not _direct(connection):
        connection.execute(statement, list(rows))
        return
    compiled = _compiled(statement, connection.dialect, tuple(rows[0]))
    _on_driver(connection, "executemany", compiled.sql, [compiled.parameters(r) for r in rows])


def create_running_trial(connection: sqlalchemy.Connection, study_id: int
                         ) -> tuple[int, int, datetime]:
    """Insert a running trial as RDBStorage._create_new_trial does without a template: the
    study's row locked while the trials before it are counted for its number. Returns its id,
    number and start time (naive local time, as Optuna reads it)."""
    if not _count(connection, _LOCK_STUDY, {"b_study_id": study_id}):
        raise KeyError(NOT_FOUND_MSG)
    start = datetime.now()
    trial_id = _insert(connection, _INSERT_TRIAL, {"b_study_id": study_id,
                                                   "b_start": to_utc(start)})
    number = _count(connection, _COUNT_BEFORE, {"b_study_id": study_id, "b_trial_id": trial_id})
    _execute(connection, _SET_NUMBER, {"b_trial_id": trial_id, "b_number": number})
    return trial_id, number, start


def first_heartbeat(connection: sqlalchemy.Connection, trial_id: int) -> None:
    """The heartbeat row of a trial that has none yet (one just created)."""
    _execute(connection, _FIRST_BEAT, {"b_trial_id": trial_id})


def record_heartbeat(connection: sqlalchemy.Connection, trial_id: int) -> None:
    """The trial's heartbeat row set to the database's clock, as RDBStorage.record_heartbeat."""
    if not connection.execute(_BEAT, {"b_trial_id": trial_id}).rowcount:
        connection.execute(_FIRST_BEAT, {"b_trial_id": trial_id})


def count_claimed(connection: sqlalchemy.Connection, study_id: int, before: int | None) -> int:
    """Complete and pruned trials, plus running ones (numbered below `before`, if given)."""
    if before is None:
        return _count(connection, _COUNT_CLAIMED, {"b_study_id": study_id})
    return _count(connection, _COUNT_CLAIMED_BEFORE, {"b_study_id": study_id, "b_before": before})


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
        _insert_rows(connection, _PARAMS, rows)


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
    _insert_rows(connection, table, [
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
    _insert_rows(connection, _STEPS, rows)


def finish(connection: sqlalchemy.Connection, trial_id: int, state: TrialState,
           values: Iterable[float] | None, *, may_have_values: bool) -> datetime | None:
    """Set an unfinished trial's finished state and end time, and store its objective values
    (deleting stored ones first if `may_have_values`), as set_trial_state_values does.
    Returns the end time (naive local time), or None, storing nothing, if the trial is
    finished already (or missing)."""
    complete = datetime.now()
    if not _execute(connection, _FINISH, {"b_trial_id": trial_id, "b_new_state": state,
                                          "b_complete": to_utc(complete)}):
        return None
    if values is not None:
        if may_have_values:
            _execute(connection, _DELETE_VALUES, {"b_trial_id": trial_id})
        to_stored = models.TrialValueModel.value_to_stored_repr
        rows = []
        for objective, value in enumerate(values):
            stored_value, value_type = to_stored(value)
            rows.append({"trial_id": trial_id, "objective": objective, "value": stored_value,
                         "value_type": value_type})
        if rows:
            _insert_rows(connection, _VALUES, rows)
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
