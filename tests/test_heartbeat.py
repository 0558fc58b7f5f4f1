"""One heartbeat thread per process: beats for the trial running now, and only for it."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from autotune.fast._batched import BatchedRDBStorage
from autotune.search._heartbeat import Heartbeat


def beats(storage: BatchedRDBStorage) -> list[int]:
    """Trial ids whose heartbeat each statement sent from now on wrote, in order."""
    written: list[int] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "trial_heartbeats" in statement and not statement.lstrip().startswith("SELECT"):
            written.append(parameters[-1] if isinstance(parameters, tuple) else parameters)

    sqlalchemy.event.listen(storage.engine, "before_cursor_execute", record)
    return written


def test_a_trial_beats_at_once_then_every_interval_and_not_after_it_ends(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    storage = BatchedRDBStorage(url, heartbeat_interval=1)
    study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "h")
    created_here = storage.create_new_trial(study_id)  # its first beat written with it
    elsewhere = optuna.storages.RDBStorage(url)  # a plain Optuna storage: no beat at creation
    taken = elsewhere.create_new_trial(study_id)
    elsewhere.engine.dispose()
    heartbeat = Heartbeat(storage, interval_s=0.2)
    written = beats(storage)
    with heartbeat.beating(created_here):
        assert written == []  # the beat written a moment ago, at creation, stands
        time.sleep(0.9)
    n_during = len(written)
    assert n_during >= 3 and set(written) == {created_here}  # ~4 beats in 0.9 s
    with heartbeat.beating(taken):
        assert written[n_during:] == [taken, taken]  # at once: an UPDATE finding no row, INSERT
        time.sleep(0.5)
    assert set(written[n_during:]) == {taken}
    n_after = len(written)
    time.sleep(0.5)
    assert len(written) == n_after  # no trial running: no beat
    with sqlalchemy.create_engine(storage.engine.url).connect() as conn:
        rows = dict(conn.execute(sqlalchemy.text(
            "SELECT trial_id, heartbeat FROM trial_heartbeats")).all())
    assert set(rows) == {created_here, taken}


def test_heartbeat_refuses_an_interval_that_is_not_positive(tmp_path: Path) -> None:
    storage = BatchedRDBStorage(f"sqlite:///{tmp_path / 'h.db'}", heartbeat_interval=1)
    with pytest.raises(ValueError, match="interval_s must be > 0"):
        Heartbeat(storage, interval_s=0)
