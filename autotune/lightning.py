"""`autotune.lightning.PruningCallback`: a Lightning Trainer that reports to autotune.

In your train function (`train = "train.py:train"`)::

    from autotune.lightning import PruningCallback

    def train(params, trial):
        trainer = lightning.pytorch.Trainer(max_epochs=trial.max_epochs,
                                            callbacks=[PruningCallback(trial, "val_acc")])
        trainer.fit(model, data)
        return trainer.callback_metrics["val_acc"].item()

After each validation the monitored metric goes to `trial.report`, so the trial's learning
curve, pruning (`autotune.Pruned` leaves `trainer.fit`), prune reason and heartbeats are
what any other trial has. Needs Lightning: pip install 'autotune[lightning]'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    from lightning.pytorch import Callback
except ImportError:  # pragma: no cover - the message is the point
    raise ImportError("autotune.lightning needs Lightning: pip install 'autotune[lightning]' "
                      "(or pip install lightning)") from None

if TYPE_CHECKING:
    from autotune.routes._trial import Trial

__all__ = ["PruningCallback"]


class PruningCallback(Callback):  # type: ignore[misc]
    """Reports `monitor` (a name your LightningModule logs with `self.log`) to the trial
    after every validation epoch; the trial is pruned when the study's pruner says so."""

    def __init__(self, trial: Trial, monitor: str) -> None:
        super().__init__()
        if not monitor:
            raise ValueError(f"monitor must name a logged metric, got {monitor=}")
        self.trial = trial
        self.monitor = monitor

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return  # the check before training: its numbers mean nothing
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            logged = ", ".join(sorted(trainer.callback_metrics)) or "nothing"
            raise KeyError(f"PruningCallback: the module logs no '{self.monitor}' (it logs "
                           f"{logged}); log it in validation_step with self.log")
        self.trial.report(trainer.current_epoch + 1, float(value))
