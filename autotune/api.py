"""`autotune.tune(...)`: a search from Python, with a study file or with your functions.

The same search `autotune run` runs (both wrap one entry, `search._session.run`): stored
definition, resume, workers, heartbeats, checkpoints and reports all work alike.
"""

from __future__ import annotations

import inspect
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import tomli_w

from autotune.errors import AutotuneError, UsageError
from autotune.storage import _storage as storage_urls

STUDY_FILES_DIR = Path(tempfile.gettempdir()) / "autotune-studies"  # files tune() writes


def tune(study: str | Path | None = None, *, name: str | None = None,
         model: str | Callable[..., Any] | None = None,
         data: str | Callable[..., Any] | None = None, loss: str | None = None,
         metric: str | None = None, train: str | Callable[..., Any] | None = None,
         script: str | Path | None = None, args: str | None = None,
         report_regex: str | None = None, direction: str | None = None,
         space: dict[str, dict[str, Any]] | None = None,
         fixed: dict[str, Any] | None = None, n_trials: int | None = None,
         max_epochs: int | None = None, storage: str | None = None, workers: int = 1,
         seed: int | None = None, sampler: str | None = None, pruner: str | None = None,
         device: str = "auto", data_dir: str | None = None, timeout_s: float | None = None,
         artifacts: str | None = None, checkpoint_every_s: float | None = None,
         allow_changes: bool = False, tensorboard: str | None = None,
         mlflow: str | None = None, launcher: str = "local", ray_address: str | None = None,
         cpus_per_trial: float | None = None, gpus_per_trial: float | None = None,
         ray_wait_s: float | None = None) -> optuna.Study:
    """Run (or resume) a search and return its `optuna.Study`.

    Either `study`, a study file's path or a shipped study's name, or the study itself:
    `name`, `data` and `model` (built-in names, "file.py:function" references, or
    module-level functions, which every worker imports by their file), plus `loss`,
    `metric`, `space`, `fixed`. Or your own training instead of data and model: `train`, a
    function train(params, trial: autotune.Trial) -> float, or `script`, a training
    script's path (with `args` and `report_regex`); `metric` then names what it reports,
    and `direction` ("maximize" or "minimize") is needed for a metric autotune does not
    know. `n_trials`, `max_epochs`, `seed`, `sampler`, `pruner` and
    `timeout_s` override either, as the command's flags do (`name` renames a study file's
    study, as --study-name). `launcher="ray"` places the `workers` on a Ray cluster
    (`ray_address`, `cpus_per_trial`, `gpus_per_trial`, `ray_wait_s`), as --launcher ray
    does. Raises UsageError for bad input (nothing stored is changed), KeyboardInterrupt
    when interrupted (finished trials are kept) and AutotuneError when the run fails.
    `autotune run` runs the same entry (`search._session.run`).
    """
    from autotune.search import _session as session

    rename = name if study is not None else None  # a study file's own name, overridden
    if study is None:
        study = write_study_file(name=name, model=model, data=data, loss=loss, metric=metric,
                                 space=space, fixed=fixed, seed=seed,
                                 own={"train": train, "script": script, "args": args,
                                      "report_regex": report_regex, "direction": direction})
    elif any(v is not None for v in (model, data, loss, metric, space, fixed, train, script,
                                      args, report_regex, direction)):
        raise UsageError("tune(): give a study file, or the study's parts (model, data, "
                         "train, script, space, ...), not both")
    options = session.Options(
        study=str(study), study_name=rename, storage=storage, n_trials=n_trials,
        timeout=timeout_s, max_epochs=max_epochs, seed=seed, sampler=sampler, pruner=pruner,
        device=device, data_dir=data_dir, artifacts=artifacts, workers=workers,
        checkpoint_every=checkpoint_every_s, allow_changes=allow_changes,
        tensorboard=tensorboard, mlflow=mlflow, launcher=launcher, ray_address=ray_address,
        cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, ray_wait=ray_wait_s)
    if launcher not in ("local", "ray"):
        raise UsageError(f"tune(): launcher must be 'local' or 'ray', got {launcher!r}")
    code = session.run(options)
    if code == session.EXIT_USAGE:
        raise UsageError("tune(): refused; the reason is on the line above")
    if code == session.EXIT_INTERRUPTED:
        raise KeyboardInterrupt("tune(): interrupted; finished trials are kept, call it again "
                                "to resume")
    if code != session.EXIT_OK:
        raise AutotuneError(f"tune(): the search ended with exit code {code}; see above")
    from autotune.spec._spec import load_spec

    study_name = name or load_spec(str(study)).name
    return optuna.load_study(study_name=study_name, storage=storage_urls.resolve_url(storage))


def reference(value: str | Callable[..., Any], what: str) -> str:
    """A built-in name or "file.py:function" as given, or the reference of a module-level
    function (its file, absolute, and its name); UsageError for one no worker could import."""
    if isinstance(value, str):
        return value
    if not callable(value):
        raise UsageError(f"tune(): {what} must be a name, 'file.py:function' or a function, "
                         f"got {type(value).__name__}")
    qualname = getattr(value, "__qualname__", "")
    source = inspect.getsourcefile(value) if inspect.isfunction(value) else None
    if not re.fullmatch(r"[A-Za-z_]\w*", qualname) or source is None:
        raise UsageError(f"tune(): {what} {qualname or value!r} is a lambda, a nested "
                         "function or a method: workers import it by its file and name, so "
                         "move it to the module's top level")
    return f"{Path(source).resolve()}:{qualname}"


def write_study_file(*, name: str | None, model: Any, data: Any, loss: str | None,
                     metric: str | None, space: dict[str, Any] | None,
                     fixed: dict[str, Any] | None, seed: int | None,
                     own: dict[str, Any] | None = None) -> Path:
    """The study a tune() call declares, as a study file every worker can read."""
    own = {k: v for k, v in (own or {}).items() if v is not None}
    if not name or (data is None and "train" not in own and "script" not in own):
        raise UsageError("tune(): give a study file, or at least name= and data= (and model=, "
                         "default 'mlp'), or name= and train= (your function) or script=")
    doc: dict[str, Any] = {"name": name}
    if "train" in own:
        own["train"] = reference(own["train"], "train")
    if "script" in own:  # the study file is written elsewhere: the script's path, absolute
        own["script"] = str(Path(own["script"]).resolve())
    if data is not None or model is not None or not own:
        doc.update({"dataset": reference(data, "data"),
                    "model": reference(model or "mlp", "model")})
    doc.update(own)
    doc.update({k: v for k, v in (("loss", loss), ("metric", metric), ("seed", seed))
                if v is not None})
    if fixed:
        doc["fixed"] = fixed
    if space:
        doc["space"] = space
    STUDY_FILES_DIR.mkdir(parents=True, exist_ok=True)
    path = STUDY_FILES_DIR / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.toml"
    path.write_text("# written by autotune.tune()\n" + tomli_w.dumps(doc), encoding="utf-8")
    return path
