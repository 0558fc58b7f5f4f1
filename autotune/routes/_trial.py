"""`autotune.Trial`: what a user's own training gets from the search, and `autotune.Pruned`.

Your `train(params, trial)` (or the script autotune runs for you) reports a value per
epoch through `trial.report`, which prunes a losing trial by raising `Pruned`;
`trial.checkpoint(state)` stores what a retry needs, and `trial.restore()` gives it back
when the worker that ran this trial died (or the run was interrupted) and this trial
continues its work.
"""

from __future__ import annotations

import io
import math
import os
import random
import socket
import sys
import time
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore

from autotune.errors import Diverged, UserCodeError
from autotune.launch._ray import NODE_ENV
from autotune.search import _samplers as samplers
from autotune.search._objective import retry_history, trial_seed
from autotune.spec import _space as space
from autotune.spec._spec import StudySpec
from autotune.storage import _storage as storage
from autotune.tracking._tracker import Tracker, scalars_of
from autotune.training import _artifacts as artifacts
from autotune.training import _rng as rng


class Pruned(optuna.TrialPruned):
    """Raised by `Trial.report` when the study's pruner stops this trial; let it propagate
    out of your train function (autotune records the trial as pruned, with the reason)."""


class Trial:
    """One trial of the search, as your own training sees it.

    `params`: every searched param's value for this trial and every [fixed] one;
    `number`: the trial's number in the study; `device`: where to train (a torch.device,
    the worker's GPU or the CPU); `max_epochs`: the study's epochs per trial; `seed`: the
    trial's seed (torch, random and NumPy are seeded with it before your function runs);
    `optuna_trial`: the `optuna.Trial` underneath, for integrations that take one.
    """

    def __init__(self, trial: optuna.Trial, spec: StudySpec, params: dict[str, Any], *,
                 device: torch.device, seed: int, store: FileSystemArtifactStore,
                 retries: list[int], tracker: Tracker | None = None) -> None:
        self._tracker = tracker
        self.optuna_trial = trial
        self.number = trial.number
        self.params = dict(params)
        self.device = device
        self.max_epochs = spec.max_epochs
        self.seed = seed
        self._spec = spec
        self._store = store
        self._retries = retries  # the dead trials this one continues, oldest first
        self._epochs: list[dict[str, float]] = []  # the learning curve, restored epochs too
        self._last_report = time.perf_counter()
        self._restored: tuple[Any] | None = None
        self._checked_checkpoint = False

    @property
    def retries(self) -> list[int]:
        """The numbers of the dead trials this one retries, oldest first ([] when fresh)."""
        return list(self._retries)

    @property
    def epochs(self) -> list[dict[str, float]]:
        """The reports so far (restored ones first): epoch, value, seconds, other metrics."""
        return list(self._epochs)

    def report(self, epoch: int, value: float, **metrics: float) -> None:
        """Report the study's metric after `epoch` (1-based), and any other metrics for the
        learning curve. Raises `Pruned` when the pruner stops this trial (let it propagate)
        and fails the trial when the value is NaN or infinite."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise TypeError(f"trial.report(): epoch must be an integer >= 0, got {epoch!r}")
        number = _as_float(value, "trial.report(): value")
        if not math.isfinite(number):
            reason = f"{self._spec.metric} is {number} at epoch {epoch}"
            self.optuna_trial.set_user_attr("fail_reason", reason)
            raise Diverged(reason)
        now = time.perf_counter()
        self._epochs.append({"epoch": epoch, "value": number,
                             "seconds": round(now - self._last_report, 4),
                             **{k: _as_float(v, f"trial.report(): {k}")
                                for k, v in metrics.items()}})
        self._last_report = now
        if self._tracker is not None:
            last = self._epochs[-1]
            self._tracker.epoch(self.optuna_trial, epoch, scalars_of(
                epoch_seconds=last["seconds"],
                **{k: v for k, v in last.items() if k not in ("epoch", "value", "seconds")},
                **{self._spec.metric: number}))
        self.optuna_trial.report(number, epoch)
        if self.optuna_trial.should_prune():
            reason = samplers.prune_reason(self.optuna_trial.study, self._spec.pruner,
                                           self._spec.pruner_options,
                                           [e["value"] for e in self._epochs])
            self.optuna_trial.set_user_attr("prune_reason", reason)
            raise Pruned(reason)

    def checkpoint(self, state: Any) -> None:
        """Store `state` (tensors, numbers, strings, lists, dicts: state_dict()s and an
        epoch count, say) with the epochs reported so far, replacing this trial's last
        checkpoint. A retry of this trial gets it back from `restore()`."""
        buffer = io.BytesIO()
        torch.save({"epochs": self._epochs, "state": state}, buffer)
        if not self._checked_checkpoint:  # the first one: fail now, not in a retry
            try:
                torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
            except Exception as exc:
                raise TypeError("trial.checkpoint(): the state must load with "
                                "torch.load(weights_only=True): tensors, numbers, strings, "
                                f"lists and dicts ({str(exc).splitlines()[0]})") from None
            self._checked_checkpoint = True
        buffer.seek(0)
        self._store.write(artifacts.checkpoint_id(self._spec.name, self.number), buffer)
        storage.flush_trial(self.optuna_trial)

    def restore(self) -> Any | None:
        """The state the trial this one retries last checkpointed, or None (a fresh trial,
        or no checkpoint). Its reported epochs count as this trial's: report from the next
        epoch on."""
        if self._restored is not None:
            return self._restored[0]
        state = None
        for dead in reversed(self._retries):
            data = self._read_checkpoint(dead)
            if data is None:
                continue
            self.carry_on(dead, data["epochs"])
            state = data["state"]
            break
        self._restored = (state,)
        return state

    def carry_on(self, dead: int, epochs: list[dict[str, float]]) -> None:
        """Count the epochs the dead trial `dead` reported before its checkpoint as this
        trial's own (it continues from that checkpoint), and record where it resumed."""
        for epoch in epochs:
            self.optuna_trial.report(epoch["value"], int(epoch["epoch"]))
        self._epochs = list(epochs) + self._epochs
        last = int(epochs[-1]["epoch"]) if epochs else 0
        self.optuna_trial.set_user_attr("resumed_from", {"trial": dead, "epoch": last})

    def _read_checkpoint(self, dead: int) -> dict[str, Any] | None:
        name = artifacts.checkpoint_id(self._spec.name, dead)
        try:
            with self._store.open_reader(name) as reader:
                raw = reader.read()
        except optuna.artifacts.exceptions.ArtifactNotFound:
            return None
        try:
            data = torch.load(io.BytesIO(raw), weights_only=True)
            return data if isinstance(data, dict) and "state" in data else None
        except Exception as exc:  # cut short on disk: an older checkpoint, or a fresh start
            print(f"checkpoint {name} is unreadable ({type(exc).__name__}: {exc}); not "
                  "resuming from it", file=sys.stderr, flush=True)
            return None

    def value_of(self, returned: Any) -> float:
        """The trial's value: what the train function returned, or (None) its last report."""
        if returned is None:
            if not self._epochs:
                raise UserCodeError(f"train() returned None and reported nothing; return the "
                                    f"trial's {self._spec.metric} (a number)")
            return self._epochs[-1]["value"]
        try:
            value = _as_float(returned, "the returned value")
        except TypeError as exc:
            raise UserCodeError(f"train() must return the trial's {self._spec.metric}: "
                                f"{exc}") from None
        if not math.isfinite(value):
            raise Diverged(f"train() returned {self._spec.metric} = {value}")
        return value

    def finish(self, wall_s: float, *, keep_checkpoint: bool) -> None:
        """Store what the trial cost and its learning curve, whatever way it ended; drop
        its checkpoint unless a retry will want it (the run was interrupted)."""
        trial = self.optuna_trial
        train_s = sum(e["seconds"] for e in self._epochs)
        trial.set_user_attr("epochs_run", len(self._epochs))
        trial.set_user_attr("train_time_s", round(train_s, 3))
        trial.set_user_attr("seconds_per_epoch",
                            round(train_s / len(self._epochs), 4) if self._epochs else None)
        trial.set_user_attr("wall_time_s", round(wall_s, 3))
        artifacts.upload_json(self._store, trial, artifacts.LEARNING_CURVE, self._epochs)
        if not keep_checkpoint:
            artifacts.remove_checkpoint(self._store, self._spec.name, self.number)


def start(trial: optuna.Trial, spec: StudySpec, device: torch.device,
          store: FileSystemArtifactStore, trained_on: str,
          tracker: Tracker | None = None) -> Trial:
    """A trial of the user's own training: its params sampled, its seed (a retry's is the
    trial's it retries) set in torch, random and NumPy, and where it runs recorded."""
    retries = retry_history(trial)
    inherited = trial.user_attrs.get("seed") if retries else None
    seed = int(inherited) if inherited is not None else trial_seed(spec, trial.number)
    params = {**spec.fixed, **space.suggest_params(trial, spec)}
    for key, value in (("seed", seed), ("device", str(device)),
                       ("host", socket.gethostname()), ("pid", os.getpid()),
                       ("trained_on", trained_on)):
        trial.set_user_attr(key, value)
    if os.environ.get(NODE_ENV):  # a worker on a Ray cluster: which node
        trial.set_user_attr("node", os.environ[NODE_ENV])
    if tracker is not None:
        tracker.start(trial, retries)
    rng.seed(seed, device)
    random.seed(seed)
    try:
        import numpy

        numpy.random.seed(seed % 2**32)
    except ImportError:
        pass
    return Trial(trial, spec, params, device=device, seed=seed, store=store, retries=retries,
                 tracker=tracker)


def _as_float(value: Any, what: str) -> float:
    """A number (int, float, 0-d tensor, NumPy scalar) as a float; TypeError otherwise."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{what} must be a number, got {value!r}") from None
