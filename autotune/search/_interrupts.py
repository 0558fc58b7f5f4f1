"""Ctrl-C and SIGTERM held back while a trial is created or finished: `Interrupts`.

A KeyboardInterrupt raised in the middle of `study.ask()` or of the tell can leave a trial
RUNNING with no process to finish it (it waits for the stale-trial check, 30 s and more) or
cut between its creation and its first parameters. Inside `Interrupts.held()` the first
signal is only noted and raised as KeyboardInterrupt once the block has ended, where the
loop can close the trial; a second signal there raises at once, so a storage call that
hangs (a database that went down) can still be left with a second Ctrl-C. Outside that block
both signals raise KeyboardInterrupt immediately, as Python's Ctrl-C does.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """Handlers for SIGINT and SIGTERM, installed by `installed()` in the main thread only."""

    def __init__(self) -> None:
        self.holding = False
        self.pending: int | None = None  # the signal noted while holding

    @contextlib.contextmanager
    def installed(self) -> Iterator[Interrupts]:
        """Handle the signals here until the block ends, then restore the previous handlers.

        Signal handlers can only be set from the main thread; elsewhere nothing is installed
        and the signals keep whatever handling they had.
        """
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous: dict[int, Any] = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Note a first signal during the block instead of raising; `raise_pending()` raises."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False

    def raise_pending(self) -> None:
        """Raise KeyboardInterrupt if a signal was noted while holding."""
        if self.pending is not None:
            signum, self.pending = self.pending, None
            raise KeyboardInterrupt(f"signal {signum}")

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.holding and self.pending is None:
            self.pending = signum
            return
        self.pending = None
        raise KeyboardInterrupt(f"signal {signum}")
