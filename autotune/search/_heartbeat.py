"""One heartbeat thread per process, beating for whichever trial this process runs now.

Optuna's `study.optimize` starts a thread for every trial, which records a heartbeat when it
starts and is joined when the trial ends (~2 ms of every trial, and its first write competes
with the trial's own). Here one daemon thread lives as long as the process: `beating(trial_id)`
records the trial's first heartbeat at once (a dead worker's trial is found stale only if it
has one; the batched storage wrote it already for a trial it just created), then the thread
records one every `interval_s` until the trial ends.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
import threading
from collections.abc import Iterator
from typing import Protocol

import optuna
import sqlalchemy


class Recorder(Protocol):
    """Where beats go: an Optuna BaseHeartbeat storage, or `_beats.AttrBeats`."""

    def record_heartbeat(self, trial_id: int) -> None: ...


class Heartbeat:
    """Records heartbeats in `storage` for the trial marked as running here."""

    def __init__(self, storage: Recorder, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s=}")
        self.storage = storage
        self.interval_s = interval_s
        self._trial_id: int | None = None
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def beating(self, trial_id: int) -> Iterator[None]:
        """Heartbeats for `trial_id` while the block runs (one now, then every interval_s)."""
        self.storage.record_heartbeat(trial_id)
        with self._lock:
            self._trial_id = trial_id
            if self._thread is None:
                self._thread = threading.Thread(target=self._beat, daemon=True,
                                                name="autotune-heartbeat")
                self._thread.start()
        self._changed.set()  # the next beat is interval_s after this one, not sooner
        try:
            yield
        finally:
            with self._lock:
                self._trial_id = None

    def _beat(self) -> None:
        while True:  # a daemon thread: it ends with the process
            if self._changed.wait(self.interval_s):
                self._changed.clear()
                continue
            with self._lock:
                trial_id = self._trial_id
            if trial_id is None:
                continue
            try:
                self.storage.record_heartbeat(trial_id)
            except Exception as exc:  # the next beat tries again; the grace period allows it
                print(f"heartbeat for trial id {trial_id} failed ({exc}); retrying",
                      file=sys.stderr, flush=True)


def read_heartbeats(store: optuna.storages.BaseStorage
                    ) -> tuple[dict[int, dt.datetime], dt.datetime | None]:
    """Every trial's last heartbeat (trial id -> time) and the database's clock now, both in
    the database's time: Optuna stamps heartbeats with its CURRENT_TIMESTAMP (UTC on SQLite,
    the session's zone on a server), so ages must be taken against that clock, never this
    machine's local time. ({}, None) for storages without heartbeats."""
    rdb = getattr(store, "_backend", store)  # unwrap Optuna's cache layer if present
    if not isinstance(rdb, optuna.storages.RDBStorage):
        return {}, None
    # PostgreSQL's CURRENT_TIMESTAMP has a zone; the stored beats are its session's local time
    now = "LOCALTIMESTAMP" if rdb.engine.dialect.name == "postgresql" else "CURRENT_TIMESTAMP"
    with rdb.engine.connect() as conn:
        db_now = _as_datetime(conn.execute(sqlalchemy.text(f"SELECT {now}")).scalar_one())
        rows = conn.execute(sqlalchemy.text("SELECT trial_id, heartbeat FROM trial_heartbeats"))
        return {int(trial_id): _as_datetime(beat) for trial_id, beat in rows}, db_now


def _as_datetime(value: object) -> dt.datetime:
    """A timestamp as the database returned it (SQLite: text)."""
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
