"""`--tensorboard DIR` (or `tensorboard = "DIR"` in a study file): one event-file folder per
trial, `DIR/<study>/trial-<n>`, written with `torch.utils.tensorboard`.

Per epoch: the training loss, the validation metric, the learning rate and the epoch's
seconds (what the trial reports: a train function's or script's own metrics too). When the
trial ends: its params as hparams with its final value and state, so TensorBoard's HParams
tab compares the trials. Trials only queue what they report: one thread per process opens,
writes and closes the event files, so no trial waits on a file (opening and closing one
cost ~1.6 ms a trial here).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from autotune.errors import UsageError
from autotune.tracking._tracker import QueuedTracker

INSTALL = "pip install 'autotune[tensorboard]' (or pip install tensorboard)"


def check_installed() -> None:
    """UsageError (exit 2, before anything is stored) when TensorBoard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise UsageError(f"--tensorboard needs TensorBoard: {INSTALL}") from None


def study_folder(root: str | Path, study_name: str) -> Path:
    """`root/<study>`: the study's folder of trial folders (its name made safe for a path)."""
    return Path(root) / re.sub(r"[^A-Za-z0-9_.-]", "_", study_name)


class TensorBoardTracker(QueuedTracker):
    """Writes each trial of this process into its own event-file folder (from the thread
    QueuedTracker runs); `close()` writes what is queued and waits for it."""

    name = "TensorBoard events"

    def __init__(self, root: str | Path, study_name: str, metric: str) -> None:
        check_installed()
        super().__init__()
        self.folder = study_folder(root, study_name)
        self.metric = metric
        self._writers: dict[int, Any] = {}  # trial number -> SummaryWriter (thread's own)
        self._retries: dict[int, list[int]] = {}  # trial number -> the trials it continues

    def _closing(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def _start(self, number: int, retries: list[int]) -> None:
        if retries:
            self._retries[number] = retries

    def _writer(self, number: int) -> Any:
        writer = self._writers.get(number)
        if writer is None:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(log_dir=str(self.folder / f"trial-{number}"),
                                   flush_secs=10)
            retried = self._retries.pop(number, None)
            if retried:  # the trial it continues: its own folder, trial-<that number>
                writer.add_text("retries", f"trial {retried[-1]} (trial-{retried[-1]})")
            self._writers[number] = writer
        return writer

    def _epoch(self, number: int, epoch: int, scalars: dict[str, float]) -> None:
        writer = self._writer(number)
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, epoch)

    def _finish(self, number: int, params: dict[str, Any], state: str, value: float | None,
                reason: str | None) -> None:
        from torch.utils.tensorboard.summary import hparams

        writer = self._writer(number)
        shown = {k: v if isinstance(v, int | float | str | bool) else str(v)
                 for k, v in params.items()}
        shown["state"] = state
        final = value if value is not None else float("nan")
        # what add_hparams writes, into the trial's own event file: add_hparams would open a
        # second writer (and file) in a folder of its own
        for summary in hparams(shown, {f"final/{self.metric}": final}):
            writer.file_writer.add_summary(summary)
        writer.add_scalar(f"final/{self.metric}", final)
        writer.close()
        del self._writers[number]
