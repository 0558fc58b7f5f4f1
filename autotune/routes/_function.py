"""The objective of a study whose own function trains: `train = "train.py:train"`.

Each trial calls `train(params, trial)` with an `autotune.Trial`; what it returns (or, if
None, its last report) is the trial's value. An exception in it fails that trial, with the
traceback stored on it, and the study goes on.
"""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore

from autotune.errors import Diverged, UserCodeError
from autotune.plugins import _references as plugins
from autotune.routes import _trial
from autotune.search._objective import user_code_failed
from autotune.spec._spec import StudySpec
from autotune.tracking._tracker import Tracker


class FunctionObjective:
    """Runs the study's `train` function once per trial."""

    def __init__(self, spec: StudySpec, device: torch.device,
                 store: FileSystemArtifactStore, tracker: Tracker | None = None) -> None:
        self.spec = spec
        self.tracker = tracker
        self.device = device
        self.store = store
        self.train = plugins.load_function(spec.train, Path(spec.path).parent,
                                           f"{spec.path}: train")

    def __call__(self, trial: optuna.Trial) -> float:
        user = _trial.start(trial, self.spec, self.device, self.store,
                            trained_on=f"your function {self.spec.train}",
                            tracker=self.tracker)
        started = time.perf_counter()
        interrupted = False
        try:
            return user.value_of(self.train(user.params, user))
        except (optuna.TrialPruned, Diverged):
            raise
        except UserCodeError as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise
        except KeyboardInterrupt:
            interrupted = True  # the next run requeues this trial; its retry restores
            raise
        except Exception as exc:  # in the user's code: this trial fails, the study goes on
            raise user_code_failed(trial, exc) from exc
        finally:
            user.finish(time.perf_counter() - started, keep_checkpoint=interrupted)
