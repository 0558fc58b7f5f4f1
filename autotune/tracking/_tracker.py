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

    def finish(self, trial: optuna.Trial, state: str, value: float | None) -> None:
        """The trial ended: "complete" (value: its value), "pruned" or "failed" (value: its
        last report, or None)."""

    def close(self) -> None:
        """Everything told so far is written (called before the process ends)."""


def tracked(objective: Callable[[optuna.Trial], float], tracker: Tracker | None
            ) -> Callable[[optuna.Trial], float]:
    """`objective`, telling `tracker` how each trial ended (itself when there is none)."""
    if tracker is None:
        return objective

    def run(trial: optuna.Trial) -> float:
        state, value = "failed", None
        try:
            value = objective(trial)
            state = "complete"
            return value
        except optuna.TrialPruned:
            state = "pruned"
            raise
        finally:
            if value is None:
                reported = trial.storage.get_trial(trial._trial_id).intermediate_values
                value = reported[max(reported)] if reported else None
            tracker.finish(trial, state, value)

    return run


def scalars_of(**named: Any) -> dict[str, float]:
    """Scalars as TensorBoard tags them, None values left out."""
    return {k: float(v) for k, v in named.items() if v is not None}
