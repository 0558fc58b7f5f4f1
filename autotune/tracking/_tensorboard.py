"""`--tensorboard DIR` (or `tensorboard = "DIR"` in a study file): one event-file folder per
trial, `DIR/<study>/trial-<n>`, written with `torch.utils.tensorboard`.

Per epoch: the training loss, the validation metric and loss, the learning rate and the
epoch's seconds (what the trial reports: a train function's or script's own metrics too).
When the trial ends: its params as hparams with its final value and state, so TensorBoard's
HParams tab compares the trials. The writer queues events to its own thread: a scalar costs
the training loop microseconds, not a file write.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import optuna

from autotune.errors import UsageError

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


class TensorBoardTracker:
    """Writes each trial of this process into its own event-file folder."""

    def __init__(self, root: str | Path, study_name: str, metric: str) -> None:
        check_installed()
        self.folder = study_folder(root, study_name)
        self.metric = metric
        self._writers: dict[int, Any] = {}  # trial number -> SummaryWriter

    def _writer(self, trial: optuna.Trial) -> Any:
        writer = self._writers.get(trial.number)
        if writer is None:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(log_dir=str(self.folder / f"trial-{trial.number}"),
                                   flush_secs=10)
            retried = trial.storage.get_trial_system_attrs(trial._trial_id).get(
                "retry_history")
            if retried:  # the trial it continues: its own folder, trial-<that number>
                writer.add_text("retries", f"trial {retried[-1]} (trial-{retried[-1]})")
            self._writers[trial.number] = writer
        return writer

    def epoch(self, trial: optuna.Trial, epoch: int, scalars: dict[str, float]) -> None:
        writer = self._writer(trial)
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, epoch)

    def finish(self, trial: optuna.Trial, state: str, value: float | None) -> None:
        writer = self._writer(trial)
        params = {k: v if isinstance(v, int | float | str | bool) else str(v)
                  for k, v in trial.params.items()}
        params["state"] = state
        metrics = {f"final/{self.metric}": value if value is not None else float("nan")}
        # into the trial's own folder ("."), not a new one per call as by default
        writer.add_hparams(params, metrics, run_name=".", global_step=None)
        writer.close()
        del self._writers[trial.number]

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


