"""The objective: trial -> space.suggest() -> TrainConfig -> train.fit(on_epoch=report/prune)."""

from __future__ import annotations

import math
import os
import socket
import time
import traceback
from pathlib import Path

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore

from autotune.errors import Diverged, UserCodeError
from autotune.launch._ray import NODE_ENV
from autotune.plugins import _references as plugins
from autotune.search import _samplers as samplers
from autotune.search._loop import INTERRUPTED_ATTR
from autotune.search._retry import RetryTrial
from autotune.spec import _space as space
from autotune.spec._config import CHECKPOINT_EVERY_S
from autotune.spec._spec import StudySpec
from autotune.storage import _storage as storage
from autotune.tracking._tracker import Tracker, scalars_of
from autotune.training import _artifacts as artifacts
from autotune.training import _peak_memory as peak_memory
from autotune.training._data import Splits
from autotune.training._fit import EpochResult, TrainState, fit, fit_speedup
from autotune.training._models import build_for, count_parameters


class Objective:
    """Trains one model per trial on the train split and returns its best val accuracy.

    Training is checkpointed to the artifact store every `checkpoint_every_s` seconds (at an
    epoch's end); a trial retried after its worker died continues from the dead trial's last
    checkpoint instead of epoch 0.
    """

    def __init__(self, spec: StudySpec, splits: Splits, device: torch.device,
                 store: FileSystemArtifactStore,
                 checkpoint_every_s: float = CHECKPOINT_EVERY_S,
                 tracker: Tracker | None = None) -> None:
        self.spec = spec
        self.tracker = tracker
        self.splits = splits
        self.device = device
        self.store = store
        self.checkpoint_every_s = checkpoint_every_s

    def __call__(self, trial: optuna.Trial) -> float:
        history = retry_history(trial)
        if self.tracker is not None:
            self.tracker.start(trial, history)
        inherited_seed = trial.user_attrs.get("seed") if history else None
        seed = int(inherited_seed) if inherited_seed is not None else trial_seed(
            self.spec, trial.number)
        params = space.suggest_params(trial, self.spec)
        cfg = space.to_config(self.spec, params, seed=seed)
        user_code = not plugins.is_builtin_model(self.spec.model)
        try:
            model = build_for(self.spec.model, Path(self.spec.path).parent, cfg,
                              space.model_params(self.spec, params), self.splits.input_shape,
                              self.splits.n_outputs)  # fit moves it
        except Exception as exc:
            if user_code:
                raise user_code_failed(trial, exc) from exc
            raise
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("n_parameters", count_parameters(model))
        trial.set_user_attr("device", str(self.device))
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        if os.environ.get(NODE_ENV):  # a worker on a Ray cluster: which node
            trial.set_user_attr("node", os.environ[NODE_ENV])
        trial.set_user_attr("data_source", self.splits.source)
        peak_memory.reset(self.device)
        start = self.resume_point(trial, history)
        epochs = [EpochResult.from_dict(e) for e in start.epochs] if start else []
        best: dict[str, torch.Tensor] = {}  # weights of the best epoch trained here
        keeping = self.spec.trial_weights != "none"
        # an epoch below this can never be the one whose weights are stored: no copy of it
        floor = weights_floor(self.spec.trial_weights, trial.study)
        sign = score_sign(trial.study)  # scores (sign * value) are higher when better

        def on_checkpoint(state: TrainState) -> None:
            artifacts.save_checkpoint(self.store, self.spec.name, trial.number, state)
            storage.flush_trial(trial)  # a stored checkpoint's epochs are stored values too

        def on_epoch(result: EpochResult) -> None:
            score = sign * result.value
            if keeping and score >= floor and score > max(
                    (sign * e.value for e in epochs), default=-math.inf):
                best.clear()  # the first of equals is the best epoch, as in FitResult
                best.update({k: v.detach().clone() for k, v in model.state_dict().items()})
            epochs.append(result)
            if self.tracker is not None:
                self.tracker.epoch(trial, result.epoch, scalars_of(
                    train_loss=result.train_loss, lr=result.lr, epoch_seconds=result.seconds,
                    **{self.spec.metric: result.value}))
            trial.report(result.value, result.epoch)
            if trial.should_prune():
                reason = samplers.prune_reason(trial.study, self.spec.pruner,
                                               self.spec.pruner_options,
                                               [r.value for r in epochs])
                trial.set_user_attr("prune_reason", reason)
                raise optuna.TrialPruned(reason)

        started = time.perf_counter()
        # a user's model trains on plain torch unless its study opts in to the speed-ups
        plain = user_code and not self.spec.speedups
        trial.set_user_attr("trained_on", "torch" if plain or fit_speedup() is None
                            else "torch + speed-ups")
        interrupted = False
        try:
            result = fit(model, self.splits.x_train, self.splits.y_train, self.splits.x_val,
                         self.splits.y_val, cfg, on_epoch, start=start,
                         on_checkpoint=on_checkpoint,
                         checkpoint_every_s=self.checkpoint_every_s,
                         loss=self.spec.loss, metric=self.spec.metric, plain=plain)
        except Diverged as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise
        except (optuna.TrialPruned, UserCodeError):
            raise
        except Exception as exc:  # in the user's forward: this trial fails, the study goes on
            if user_code:
                raise user_code_failed(trial, exc) from exc
            raise
        except KeyboardInterrupt:
            # keep the checkpoint: the loop marks this trial interrupted, the next run requeues
            # it and the retry resumes from there
            interrupted = True
            raise
        finally:
            record_epochs(trial, epochs, time.perf_counter() - started)
            trial.set_user_attr("peak_memory_mb", peak_memory.peak_mb(self.device))
            artifacts.upload_json(self.store, trial, artifacts.LEARNING_CURVE,
                                  [e.as_dict() for e in epochs])
            if not interrupted:
                artifacts.remove_checkpoint(self.store, self.spec.name, trial.number)
        if best and keeps_weights(self.spec.trial_weights, result.best_value, trial.study):
            artifacts.upload_weights(self.store, trial, best)
        trial.set_user_attr("best_epoch", result.best_epoch)
        return result.best_value

    def resume_point(self, trial: optuna.Trial, history: list[int]) -> TrainState | None:
        """The newest checkpoint left by the dead trials this one retries, replayed."""
        for dead in reversed(history):
            state = artifacts.load_checkpoint(self.store, self.spec.name, dead)
            if state is None:
                continue
            for epoch in state.epochs:  # the retry's learning curve carries on
                trial.report(EpochResult.from_dict(epoch).value, epoch["epoch"])
            trial.set_user_attr("resumed_from", {"trial": dead, "epoch": state.epoch})
            return state
        return None


def user_code_failed(trial: optuna.Trial, exc: Exception) -> UserCodeError:
    """Store on the trial why the user's code failed (one line, and the traceback) and return
    the error that fails this trial only."""
    line = f"{type(exc).__name__} in your code: {exc}".splitlines()[0]
    trial.set_user_attr("fail_reason", line)
    trial.set_user_attr("traceback", "".join(traceback.format_exception(exc)))
    return UserCodeError(line)


def requeue_interrupted(study: optuna.Study) -> list[int]:
    """Queue again, with the same params, the trials a Ctrl-C or SIGTERM cut short.

    The copies carry a retry history like heartbeat retries, so they resume from the
    interrupted trial's last checkpoint. Returns the numbers of the trials requeued.
    """
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    todo = [t for t in trials if t.state == optuna.trial.TrialState.FAIL
            and t.user_attrs.get(INTERRUPTED_ATTR) and t.number not in retried]
    requeue = RetryTrial(max_retry=None)  # each interruption is the user's, not a crash
    for trial in todo:
        requeue(study, trial)
    return [t.number for t in todo]


def weights_floor(policy: str, study: optuna.Study) -> float:
    """The least value a trial starting now must reach for `keeps_weights` to store its
    weights: under "improving" the best value of the complete trials in the listing this
    trial's sampler made (later listings only add trials, so the floor can only rise), else
    -inf. A trial copies an epoch's weights only when the epoch is its best so far and
    reaches the floor: in the bench study most improving epochs of most trials do not, and
    each copy cost ~0.06 ms here (weights of 784 -> 128 -> 10)."""
    if policy != "improving":
        return -math.inf
    finished = study._get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,),
                                 use_cache=True)
    sign = score_sign(study)
    return max((sign * t.value for t in finished if t.value is not None), default=-math.inf)


def keeps_weights(policy: str, value: float, study: optuna.Study) -> bool:
    """Whether a trial that reached `value` stores its best epoch's weights: under "all"
    always, "none" never, "improving" when no complete trial did better in the listing this
    trial's sampler made (as of its start; made now if none was). A listing can only be
    behind the study, so the study's best trial always has its weights (ties too), and at
    most a few others do: each weights file costs a file and its record (~0.5 ms a trial on
    SQLite here) and the disk of one model."""
    return policy != "none" and score_sign(study) * value >= weights_floor(policy, study)


def score_sign(study: optuna.Study) -> float:
    """1 when the study maximises its metric, -1 when it minimises: `sign * value` is then
    higher for the better of two values either way."""
    return 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0


def retry_history(trial: optuna.Trial) -> list[int]:
    """Numbers of the dead trials this trial retries, oldest first; [] for a fresh trial."""
    system_attrs = trial.storage.get_trial_system_attrs(trial._trial_id)
    return list(system_attrs.get("retry_history", []))


def trial_seed(spec: StudySpec, trial_number: int) -> int:
    """The torch seed of a trial: distinct per trial, reproducible from the study seed."""
    return spec.seed * 100_003 + trial_number


def record_epochs(trial: optuna.Trial, epochs: list[EpochResult], wall_s: float) -> None:
    """Store what a trial cost, whatever way it ended (resumed epochs count too)."""
    train_s = sum(r.seconds for r in epochs)
    trial.set_user_attr("epochs_run", len(epochs))
    trial.set_user_attr("train_time_s", round(train_s, 3))
    trial.set_user_attr("val_time_s", round(sum(r.val_seconds for r in epochs), 3))
    trial.set_user_attr("seconds_per_epoch", round(train_s / len(epochs), 4) if epochs else None)
    trial.set_user_attr("wall_time_s", round(wall_s, 3))
