"""What a trial tells the trackers a study writes to (TensorBoard; more to come): each
epoch's scalars while it trains, and how it ended. The objectives call `epoch`; the search
loop's wrapper (`tracked`) calls `finish`, whatever way the trial ended."""

from __future__ import annotations

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


def scalars_of(**named: Any) -> dict[str, float]:
    """Scalars as TensorBoard tags them, None values left out."""
    return {k: float(v) for k, v in named.items() if v is not None}
