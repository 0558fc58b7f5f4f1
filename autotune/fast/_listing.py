"""When a listing of a study's trials must ask the database, and when memory can answer it.

Optuna's cache lists a study's new and unfinished trials about three times per trial (TPE
twice, the check for queued trials) and once per epoch under a pruner. The trials this
process runs are in its memory (`autotune.fast._batched`); only other processes' trials need the
database. A listing may leave those out, answering from memory alone, when
  - the last listing that asked the database is less than LIST_EVERY_S old: other
    processes' new trials and their progress are then seen at most that much later; and
  - every trial of the study numbered up to this process's newest is known: listed from the
    database, or created here. Trial numbers count the trials created before, so a trial
    created here with a number above the next one says others were created meanwhile, and
    the next listing asks. (Optuna's cache moves its "last finished trial" mark to each
    finished trial it is given and never looks below it again: a trial of another process
    numbered below one that finished here must be listed before that one is.)
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from autotune import _env as env

LIST_ENV = "AUTOTUNE_LIST_EVERY_S"
LIST_EVERY_S = 0.5  # default of $AUTOTUNE_LIST_EVERY_S


def list_every_s() -> float:
    """$AUTOTUNE_LIST_EVERY_S, else LIST_EVERY_S; UsageError (one line) if it is not >= 0."""
    return env.seconds(LIST_ENV, LIST_EVERY_S)


@dataclass
class _Study:
    asked_at: float = -math.inf  # time.monotonic() of the last listing that asked the database
    max_number: int = -1  # the highest trial number known here
    complete: bool = False  # every trial numbered up to max_number is known here


class ListingPolicy:
    """Tracks, per study, what this process knows of its trials (thread-safe)."""

    def __init__(self, every_s: float | None = None) -> None:
        every_s = list_every_s() if every_s is None else every_s
        if every_s < 0:
            raise ValueError(f"every_s must be >= 0, got {every_s=}")
        self.every_s = every_s
        self._studies: dict[int, _Study] = {}
        self._lock = threading.Lock()

    def may_skip_database(self, study_id: int) -> bool:
        """Whether a listing of the study may answer from this process's memory alone."""
        with self._lock:
            known = self._studies.get(study_id)
            return (known is not None and known.complete
                    and time.monotonic() - known.asked_at < self.every_s)

    def asked_database(self, study_id: int, numbers: Iterable[int], started_at: float) -> None:
        """A listing that asked the database (begun at `started_at`, time.monotonic()) got
        trials with these numbers: with those before, every trial up to them is known."""
        with self._lock:
            known = self._studies.setdefault(study_id, _Study())
            known.asked_at = started_at
            known.max_number = max([known.max_number, *numbers])
            known.complete = True

    def created(self, study_id: int, number: int) -> None:
        """This process created trial `number`; a gap before it means others created some."""
        with self._lock:
            known = self._studies.setdefault(study_id, _Study())
            if number != known.max_number + 1:
                known.complete = False
            known.max_number = max(known.max_number, number)
