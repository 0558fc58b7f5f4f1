"""What a trial tells the trackers a study writes to (TensorBoard; more to come): each
epoch's scalars while it trains, and how it ended. The objectives call `epoch`; the search
loop's wrapper (`tracked`) calls `finish`, whatever way the trial ended."""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable
from typing import Any, Protocol

import optuna


class Tracker(Protocol):
    def start(self, trial: optuna.Trial, retries: list[int]) -> None:
        """A trial starts; `retries`: the dead trials it continues, oldest first."""

    def epoch(self, trial: optuna.Trial, epoch: int, scalars: dict[str, float]) -> None:
        """One epoch's scalars (name -> value) of a running trial."""

    def finish(self, trial: optuna.Trial, state: str, value: float | None,
               reason: str | None = None) -> None:
        """The trial ended: "complete" (value: its value), "pruned" or "failed" (value: its
        last report, or None; reason: why, in one line)."""

    def close(self) -> None:
        """Everything told so far is written (called before the process ends)."""


def tracked(objective: Callable[[optuna.Trial], float], tracker: Tracker | None
            ) -> Callable[[optuna.Trial], float]:
    """`objective`, telling `tracker` how each trial ended (itself when there is none)."""
    if tracker is None:
        return objective

    def run(trial: optuna.Trial) -> float:
        state, value, reason = "failed", None, None
        try:
            value = objective(trial)
            state = "complete"
            return value
        except optuna.TrialPruned as exc:
            state, reason = "pruned", str(exc) or None
            raise
        except BaseException as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise
        finally:
            if value is None:
                reported = trial.storage.get_trial(trial._trial_id).intermediate_values
                value = reported[max(reported)] if reported else None
            tracker.finish(trial, state, value, reason)

    return run


class Trackers:
    """Several trackers as one: each is told everything, in order."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers

    def start(self, trial: optuna.Trial, retries: list[int]) -> None:
        for tracker in self.trackers:
            tracker.start(trial, retries)

    def epoch(self, trial: optuna.Trial, epoch: int, scalars: dict[str, float]) -> None:
        for tracker in self.trackers:
            tracker.epoch(trial, epoch, scalars)

    def finish(self, trial: optuna.Trial, state: str, value: float | None,
               reason: str | None = None) -> None:
        for tracker in self.trackers:
            tracker.finish(trial, state, value, reason)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()


class QueuedTracker:
    """A tracker whose trials only queue what they tell it: one thread per process (started
    with the first trial) calls the subclass's `_start`, `_epoch` and `_finish` in order,
    so no trial waits on a file or a database. `close()` writes what is queued and waits;
    an error in the thread is told once on stderr and never stops the search."""

    name = "tracking"  # the thread's and the warning's name

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._failed = False

    def start(self, trial: optuna.Trial, retries: list[int]) -> None:
        self._put(("start", trial.number, list(retries)))

    def epoch(self, trial: optuna.Trial, epoch: int, scalars: dict[str, float]) -> None:
        self._put(("epoch", trial.number, epoch, scalars))

    def finish(self, trial: optuna.Trial, state: str, value: float | None,
               reason: str | None = None) -> None:
        self._put(("finish", trial.number, dict(trial.params), state, value, reason))

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _put(self, item: tuple[Any, ...]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._drain, daemon=True,
                                            name=f"autotune-{self.name}")
            self._thread.start()
        self._queue.put(item)

    def _drain(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                getattr(self, "_" + item[0])(*item[1:])
            except Exception as exc:  # tracking must never stop a search
                if not self._failed:
                    print(f"warning: {self.name} not written: {type(exc).__name__}: {exc}",
                          file=sys.stderr, flush=True)
                self._failed = True
        self._closing()

    # in the thread: what a tracker writes
    def _start(self, number: int, retries: list[int]) -> None:
        raise NotImplementedError

    def _epoch(self, number: int, epoch: int, scalars: dict[str, float]) -> None:
        raise NotImplementedError

    def _finish(self, number: int, params: dict[str, Any], state: str, value: float | None,
                reason: str | None) -> None:
        raise NotImplementedError

    def _closing(self) -> None:
        """The last thing the thread does (close what is open)."""


def scalars_of(**named: Any) -> dict[str, float]:
    """Scalars as TensorBoard tags them, None values left out."""
    return {k: float(v) for k, v in named.items() if v is not None}
