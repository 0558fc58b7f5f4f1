"""A running trial's writes, batched: invisible to other processes until flushed, never lost
at the trial's end, visible at once to this process; on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from autotune.fast._batched import BatchedRDBStorage
from autotune.storage import _storage as storage


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def rdb_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'batched.db'}"
    fixture = "postgres_url" if request.param == "postgresql" else "mysql_url"
    return str(request.getfixturevalue(fixture))


def new_trial(url: str) -> tuple[BatchedRDBStorage, int, int]:
    opened = storage.open_storage(url)
    assert isinstance(opened, BatchedRDBStorage)
    study_id = opened.create_new_study([optuna.study.StudyDirection.MAXIMIZE],
                                       f"batched-{uuid.uuid4().hex[:8]}")
    return opened, study_id, opened.create_new_trial(study_id)


def stored(url: str, trial_id: int) -> optuna.trial.FrozenTrial:
    """The trial as another process sees it: a plain Optuna storage of its own."""
    other = optuna.storages.RDBStorage(storage._with_default_driver(url))
    try:
        return other.get_trial(trial_id)
    finally:
        other.engine.dispose()


def same_time(mine, stored_time) -> bool:  # type: ignore[no-untyped-def]
    """MariaDB's DATETIME keeps whole seconds; this process remembers the microseconds."""
    return stored_time <= mine and (mine - stored_time).total_seconds() < 1


def sql_statements(writer: BatchedRDBStorage) -> list[str]:
    """Every SQL statement the storage sends from now on, appended as it is sent."""
    statements: list[str] = []
    if writer.engine.dialect.name == "sqlite":
        # the statements trial_sql sends straight to sqlite3 pass no SQLAlchemy event:
        # sqlite3 traces each statement of a connection, whoever sends it
        sqlalchemy.event.listen(writer.engine, "checkout", lambda dbapi_connection, *_:
                                dbapi_connection.set_trace_callback(statements.append))
    else:
        sqlalchemy.event.listen(writer.engine, "before_cursor_execute",
                                lambda *args: statements.append(args[2]))
    return statements


def write_some(writer: BatchedRDBStorage, trial_id: int) -> None:
    writer.set_trial_param(trial_id, "lr", 0.01, FloatDistribution(1e-5, 1.0, log=True))
    writer.set_trial_param(trial_id, "optimizer", 1, CategoricalDistribution(["sgd", "adam"]))
    writer.set_trial_user_attr(trial_id, "seed", 7)
    writer.set_trial_system_attr(trial_id, "rung", {"a": [1, 2]})
    for step in (1, 2, 3):
        writer.set_trial_intermediate_value(trial_id, step, step / 10)


def test_writes_wait_in_memory_until_flushed_yet_this_process_reads_them(rdb_url):
    writer, _, trial_id = new_trial(rdb_url)
    writer._flush_every_s = 3600.0  # no background flush during this test
    write_some(writer, trial_id)
    other = stored(rdb_url, trial_id)
    assert other.params == {} and other.user_attrs == {} and other.intermediate_values == {}
    mine = writer.get_trial(trial_id)
    assert (mine.number, mine.state) == (other.number, other.state)
    assert same_time(mine.datetime_start, other.datetime_start)
    assert mine.params == {"lr": 0.01, "optimizer": "adam"}
    assert mine.user_attrs == {"seed": 7} and mine.system_attrs["rung"] == {"a": [1, 2]}
    assert mine.intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3}
    writer.flush(trial_id)
    other = stored(rdb_url, trial_id)
    assert other.params == mine.params and other.user_attrs == {"seed": 7}
    assert other.system_attrs["rung"] == {"a": [1, 2]}
    assert other.intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3}


def test_later_writes_of_the_same_keys_replace_the_stored_ones(rdb_url):
    writer, _, trial_id = new_trial(rdb_url)
    writer._flush_every_s = 3600.0
    write_some(writer, trial_id)
    writer.flush(trial_id)
    writer.set_trial_user_attr(trial_id, "seed", 8)
    writer.set_trial_user_attr(trial_id, "pid", 123)
    writer.set_trial_intermediate_value(trial_id, 3, 0.9)
    writer.set_trial_intermediate_value(trial_id, 4, float("nan"))
    writer.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.9])
    final = stored(rdb_url, trial_id)
    assert final.state == TrialState.COMPLETE and final.value == 0.9
    assert final.user_attrs == {"seed": 8, "pid": 123}
    assert final.intermediate_values[3] == 0.9 and final.intermediate_values[2] == 0.2
    assert final.intermediate_values[4] != final.intermediate_values[4]  # NaN kept as NaN


def test_the_state_change_stores_everything_first(rdb_url):
    writer, _, trial_id = new_trial(rdb_url)
    writer._flush_every_s = 3600.0
    write_some(writer, trial_id)
    writer.set_trial_state_values(trial_id, TrialState.PRUNED, [0.3])
    final = stored(rdb_url, trial_id)
    assert final.state == TrialState.PRUNED
    assert final.intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3}
    assert final.params == {"lr": 0.01, "optimizer": "adam"} and final.user_attrs == {"seed": 7}


def test_a_background_thread_stores_a_long_trial_s_writes_while_it_runs(rdb_url):
    writer, _, trial_id = new_trial(rdb_url)
    writer._flush_every_s = 0.2
    write_some(writer, trial_id)
    deadline = time.monotonic() + 10
    while stored(rdb_url, trial_id).intermediate_values != {1: 0.1, 2: 0.2, 3: 0.3}:
        assert time.monotonic() < deadline, "the background flush never came"
        time.sleep(0.1)
    assert stored(rdb_url, trial_id).user_attrs == {"seed": 7}


def test_a_trial_another_worker_declared_dead_refuses_the_flush_and_keeps_nothing_stale(
        rdb_url):
    writer, _, trial_id = new_trial(rdb_url)
    writer._flush_every_s = 3600.0
    writer.set_trial_user_attr(trial_id, "seed", 7)
    other = optuna.storages.RDBStorage(storage._with_default_driver(rdb_url))
    other.set_trial_state_values(trial_id, TrialState.FAIL)  # e.g. its heartbeat went stale
    other.engine.dispose()
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        writer.flush(trial_id)
    assert writer.get_trial(trial_id).user_attrs == {"seed": 7}  # kept, not silently lost
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        writer.set_trial_state_values(trial_id, TrialState.COMPLETE, [1.0])
    assert writer.get_trial(trial_id).state == TrialState.FAIL  # read anew, not remembered


def test_values_that_cannot_be_stored_are_refused_when_written():
    writer = BatchedRDBStorage("sqlite://")
    study_id = writer.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "x")
    trial_id = writer.create_new_trial(study_id)
    with pytest.raises(TypeError):
        writer.set_trial_user_attr(trial_id, "model", object())


def test_the_budget_count_in_sql_matches_counting_the_trials(rdb_url):
    from autotune.search._budget import n_claimed

    opened = storage.open_storage(rdb_url)
    study = optuna.create_study(storage=opened, study_name=f"count-{uuid.uuid4().hex[:8]}",
                                direction="maximize")
    states = [TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED, TrialState.FAIL,
              TrialState.RUNNING, TrialState.WAITING, TrialState.COMPLETE, TrialState.RUNNING]
    for state in states:
        trial_id = opened.create_new_trial(study._study_id)
        if state == TrialState.WAITING:
            continue
        if state != TrialState.RUNNING:
            values = [0.5] if state == TrialState.COMPLETE else None
            opened.set_trial_state_values(trial_id, state, values)
    opened.create_new_trial(study._study_id, optuna.trial.create_trial(
        state=TrialState.WAITING))
    trials = study.get_trials()
    assert [t.state for t in trials[:len(states)]] == [
        s if s != TrialState.WAITING else TrialState.RUNNING for s in states]
    for before in (None, 0, 2, 5, 8, 100):
        slow = sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                   or (t.state == TrialState.RUNNING and (before is None or t.number < before)))
        assert n_claimed(study, before) == slow, before


def test_budget_counts_taken_in_the_create_and_finish_transactions_match_a_fresh_count(
        rdb_url):
    from autotune.search._budget import claimed_after, claimed_before, n_claimed

    opened = storage.open_storage(rdb_url)
    study = optuna.create_study(storage=opened, study_name=f"counted-{uuid.uuid4().hex[:8]}",
                                direction="maximize")
    other = optuna.load_study(study_name=study.study_name, storage=storage.open_storage(rdb_url))
    for state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED):
        other.tell(other.ask(), 0.5 if state == TrialState.COMPLETE else None, state=state)
    other.ask()  # running in another process: claimed, numbered below the next
    first, second = study.ask(), study.ask()
    statements = sql_statements(opened)
    assert claimed_before(first) == 3  # from the creation, with no query of its own
    assert not statements
    assert n_claimed(study, before=first.number) == 3
    assert claimed_before(second) == n_claimed(study, before=second.number) == 4
    study.tell(first, 0.9)
    finished = study.get_trials(deepcopy=False)[first.number]
    assert claimed_after(study, finished) == n_claimed(study) == 5
    study.tell(second, state=TrialState.FAIL)
    failed = study.get_trials(deepcopy=False)[second.number]
    counted = len(statements)
    assert claimed_after(study, failed) == 4  # from the finish, with no query of its own
    assert len(statements) == counted
    assert claimed_after(study, failed) == n_claimed(study) == 4  # read once, then counted


def test_reads_of_a_trial_this_process_runs_match_the_database_after_each_flush(rdb_url):
    writer, _, trial_id = new_trial(rdb_url)
    writer._flush_every_s = 3600.0
    for step in range(1, 4):
        writer.set_trial_intermediate_value(trial_id, step, step / 10)
        writer.set_trial_user_attr(trial_id, f"attr{step}", [step])
        writer.flush(trial_id)
        mine, theirs = writer.get_trial(trial_id), stored(rdb_url, trial_id)
        for field in ("number", "state", "params", "user_attrs", "intermediate_values"):
            assert getattr(mine, field) == getattr(theirs, field), field
        assert same_time(mine.datetime_start, theirs.datetime_start)
    mine.user_attrs["attr1"].append("changed by the caller")  # a copy: the next read is intact
    assert writer.get_trial(trial_id).user_attrs["attr1"] == [1]
    mutable = {"a": [1]}
    writer.set_trial_user_attr(trial_id, "later", mutable)
    mutable["a"].append(2)  # after the write: not what was written
    writer.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.5])
    assert stored(rdb_url, trial_id).user_attrs["later"] == {"a": [1]}


def test_listing_trials_reads_only_other_processes_trials_from_the_database(rdb_url):
    writer, study_id, mine = new_trial(rdb_url)
    writer._flush_every_s = 3600.0
    writer._listing.every_s = 0.0  # every listing asks the database (no window: see below)
    write_some(writer, mine)
    other = optuna.storages.RDBStorage(storage._with_default_driver(rdb_url))
    finished = other.create_new_trial(study_id)
    other.set_trial_state_values(finished, TrialState.COMPLETE, [0.5])
    theirs = other.create_new_trial(study_id)  # running in another process
    other.set_trial_intermediate_value(theirs, 1, 0.25)
    statements = sql_statements(writer)

    listed = writer._get_trials(study_id, None, set(), -1)
    assert [t._trial_id for t in listed] == [mine, finished, theirs]
    assert listed[0].intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3}  # not stored yet
    assert listed[2].intermediate_values == {1: 0.25}
    assert [t._trial_id for t in writer._get_trials(
        study_id, (TrialState.COMPLETE,), set(), -1)] == [finished]
    assert [t._trial_id for t in writer._get_trials(
        study_id, None, {mine, theirs}, finished)] == [mine, theirs]

    statements.clear()  # what Optuna's cache asks for once only this process's trial runs
    other.set_trial_state_values(theirs, TrialState.COMPLETE, [0.7])
    assert [t._trial_id for t in writer._get_trials(study_id, None, {mine}, theirs)] == [mine]
    assert not any("trial_params" in s or "trial_values" in s for s in statements), statements

    writer.flush(mine)  # once stored, the database's copy is the one listed from memory
    mine_listed = writer._get_trials(study_id, None, set(), -1)[0]
    mine_stored = other.get_trial(mine)
    other.engine.dispose()
    for field in ("number", "state", "params", "distributions", "user_attrs", "system_attrs",
                  "intermediate_values", "values"):
        assert getattr(mine_listed, field) == getattr(mine_stored, field), field


def test_a_study_run_here_reads_the_same_trials_as_another_process(rdb_url):
    """Optuna's own loop on this storage (trials served from memory while they run and right
    after they finish, each finished in the transaction of its last writes) leaves what a plain
    Optuna storage reads back, field for field, whatever way each trial ended."""
    opened = storage.open_storage(rdb_url)
    study = optuna.create_study(storage=opened, study_name=f"same-{uuid.uuid4().hex[:8]}",
                                direction="maximize", pruner=optuna.pruners.MedianPruner(
                                    n_startup_trials=1, n_warmup_steps=0))
    study.enqueue_trial({"x": 0.5}, user_attrs={"queued": True})  # a template's rows, replaced

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        trial.set_user_attr("queued", False)
        trial.storage.set_trial_system_attr(trial._trial_id, "note", {"x": [x]})
        if trial.number == 3:
            raise RuntimeError("a failing trial")
        for step in range(3):
            trial.report(x * (step + 1) if trial.number != 2 else -1.0, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return x

    study.optimize(objective, n_trials=6, catch=(RuntimeError,))
    mine = study.get_trials()
    theirs = optuna.load_study(study_name=study.study_name, storage=optuna.storages.RDBStorage(
        storage._with_default_driver(rdb_url))).get_trials()
    assert {t.state for t in theirs} == {TrialState.COMPLETE, TrialState.PRUNED,
                                         TrialState.FAIL}
    assert len(mine) == len(theirs) == 6
    for a, b in zip(mine, theirs, strict=True):
        for field in ("number", "state", "values", "params", "distributions", "user_attrs",
                      "system_attrs", "intermediate_values", "datetime_start",
                      "datetime_complete"):
            assert getattr(a, field) == getattr(b, field), (a.number, field)
    assert theirs[0].user_attrs["queued"] is False


def test_a_finished_trial_is_listed_from_memory_once_as_stored(rdb_url):
    writer, study_id, mine = new_trial(rdb_url)
    writer._listing.every_s = 0.0
    write_some(writer, mine)
    writer.set_trial_state_values(mine, TrialState.COMPLETE, [0.75])
    statements = sql_statements(writer)
    listed = writer._get_trials(study_id, None, {mine}, -1 + mine)
    assert not any("trial_params" in s for s in statements), statements
    again = writer._get_trials(study_id, None, {mine}, -1 + mine)  # now from the database
    assert any("trial_params" in s for s in statements)
    assert [t._trial_id for t in listed] == [t._trial_id for t in again] == [mine]
    for field in ("state", "values", "params", "user_attrs", "system_attrs",
                  "intermediate_values", "datetime_start", "datetime_complete"):
        assert getattr(listed[0], field) == getattr(again[0], field), field


def test_listings_within_the_window_answer_from_memory_until_others_created_trials(rdb_url):
    writer, study_id, first = new_trial(rdb_url)
    writer._listing.every_s = 3600.0
    writer.set_trial_state_values(first, TrialState.COMPLETE, [0.5])
    assert [t._trial_id for t in writer._get_trials(study_id, None, set(), -1)] == [first]
    other = optuna.storages.RDBStorage(storage._with_default_driver(rdb_url))
    theirs = other.create_new_trial(study_id)
    other.set_trial_state_values(theirs, TrialState.COMPLETE, [0.7])
    statements = sql_statements(writer)
    assert writer._get_trials(study_id, None, set(), first) == []  # theirs: seen later
    assert statements == []
    mine = writer.create_new_trial(study_id)  # numbered after theirs: a gap, so the next asks
    listed = writer._get_trials(study_id, None, set(), first)
    assert [t._trial_id for t in listed] == [theirs, mine]
    assert listed[0].state == TrialState.COMPLETE and listed[0].value == 0.7
    statements.clear()
    running = writer._get_trials(study_id, None, {mine}, theirs)  # no gap: memory again
    assert [t._trial_id for t in running] == [mine] and statements == []
    newest = writer.create_new_trial(study_id)  # the next number: still no gap
    statements.clear()
    assert [t._trial_id for t in writer._get_trials(study_id, None, {mine}, theirs)] == [
        mine, newest]
    assert statements == []
    writer._listing.every_s = 0.0  # the window over: the database again
    late = other.create_new_trial(study_id)
    other.engine.dispose()
    assert [t._trial_id for t in writer._get_trials(study_id, None, {mine, newest}, theirs)
            ] == [mine, newest, late]
    assert statements


def test_on_sqlite_the_direct_statements_store_the_rows_sqlalchemy_would(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """trial_sql sends a trial's creation and finish straight to sqlite3; the same writes
    through SQLAlchemy's execution path leave the same rows, value for value and type for
    type (times aside: they are when each ran)."""
    from datetime import datetime

    from autotune.fast import _trial_sql as trial_sql

    class WholeSecond(datetime):  # the one instant that tells how a time was written
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def]
            return datetime(2026, 12, 2, 10, 0, 0)

    monkeypatch.setattr(trial_sql, "datetime", WholeSecond)

    def run(url: str) -> dict[str, list[tuple]]:
        writer, study_id, mine = new_trial(url)
        write_some(writer, mine)
        writer.set_trial_user_attr(mine, "nested", {"a": [1, 2.5, None]})
        writer.set_trial_intermediate_value(mine, 4, float("nan"))
        writer.set_trial_state_values(mine, TrialState.COMPLETE, [float("inf")])
        pruned = writer.create_new_trial(study_id)
        writer.set_trial_state_values(pruned, TrialState.PRUNED)
        writer.engine.dispose()
        rows = {}
        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            for table in ("trials", "trial_params", "trial_user_attributes",
                          "trial_system_attributes", "trial_intermediate_values",
                          "trial_values", "trial_heartbeats"):
                rows[table] = [tuple((type(v).__name__, v) for v in row) for row in
                               connection.execute(f"SELECT * FROM {table} ORDER BY 1")]
        connection.close()
        def is_time(kind: str, value: object) -> bool:
            return kind == "str" and str(value).startswith("20")

        # a trial's times as SQLAlchemy writes them for SQLite: microseconds always shown
        # (sqlite3's own adapter drops them when they are 0)
        assert all(len(v) == 26 for row in rows["trials"] for k, v in row if is_time(k, v))
        return {table: [tuple((k, "a time") if is_time(k, v) else (k, v) for k, v in row)
                        for row in found] for table, found in rows.items()}

    direct = run(f"sqlite:///{tmp_path / 'direct.db'}")
    monkeypatch.setattr(trial_sql, "_direct", lambda connection: False)
    through_sqlalchemy = run(f"sqlite:///{tmp_path / 'sqlalchemy.db'}")
    assert direct == through_sqlalchemy
    assert len(direct["trials"]) == 2 and direct["trial_values"]


def test_on_sqlite_a_driver_error_on_the_direct_path_is_raised_as_sqlalchemy_raises_it(
        tmp_path: Path) -> None:
    """A finish that loses a race (its value row is there already) is refused as on
    SQLAlchemy's path: IntegrityError, caught as a lost race, the transaction rolled back
    (no write lock left behind for the next writer)."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
    writer, study_id, mine = new_trial(url)
    with sqlite3.connect(tmp_path / "race.db") as other:  # another worker's value row
        other.execute("INSERT INTO trial_values (trial_id, objective, value, value_type) "
                      "VALUES (?, 0, 0.25, 'FINITE')", (mine,))
    other.close()
    assert writer.set_trial_state_values(mine, TrialState.COMPLETE, [0.5]) is False
    with sqlite3.connect(tmp_path / "race.db", timeout=0.5) as other:  # no lock is held
        other.execute("UPDATE trials SET state = 'FAIL' WHERE trial_id = ?", (mine,))
    other.close()
    from autotune.fast import _trial_sql as trial_sql

    with writer.engine.begin() as connection, pytest.raises(sqlalchemy.exc.IntegrityError):
        trial_sql.insert_params(connection, [
            {"trial_id": mine, "param_name": "x", "param_value": 0.5,
             "distribution_json": "{}"}] * 2)  # one param name twice in a trial
