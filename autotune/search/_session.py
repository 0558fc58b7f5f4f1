"""One search, start to end: `run(Options)` -> exit code. `autotune run` (python -m
autotune.run) and `autotune.tune` are two thin wrappers over it: the command parses its
flags into `Options`, `tune` takes them as arguments.

It loads the study's spec, installs the plugins, opens the storage, loads the data,
creates or resumes the study, runs this process's trials or K workers, evaluates the chosen
configuration once on test, and writes the summary and the dashboard note.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import optuna
import sqlalchemy.engine
import sqlalchemy.exc

from autotune import _env as env
from autotune.errors import AutotuneError, Diverged, UsageError, UserCodeError
from autotune.launch import _local as workers
from autotune.launch import _ray as ray_launch
from autotune.plugins import _references as plugins
from autotune.plugins._installed import load_installed
from autotune.search import _budget as budget
from autotune.search import _loop as loop
from autotune.search import _summary as summary
from autotune.search._study import (
    ARTIFACT_DIR_ATTR,
    DEFINITION_ATTR,
    FINISHED,
    TENSORBOARD_ATTR,
    check_data_source,
    check_definition,
    count_finished,
    create_study,
    find_study,
    metric_name,
    resume_study,
)
from autotune.spec._config import CHECKPOINT_ENV, CHECKPOINT_EVERY_S
from autotune.spec._spec import (
    StudySpec,
    check_algorithms,
    check_study_name,
    load_spec,
    names_a_file,
)
from autotune.storage import _storage as storage
from autotune.tracking._tracker import tracked
from autotune.training import _idx_files as idx_files
from autotune.training._losses import task

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
MAX_WORKER_ROUNDS = 5  # restarts of the worker pool while dead workers' trials are retried
# A run stops (exit 1) after this many failed trials in a row: the search space or the data
# is broken, and trying more would loop forever without finishing a trial.
MAX_CONSECUTIVE_FAILURES = 10




@dataclass(frozen=True)
class Options:
    """What one run is asked to do: the command's flags, `tune()`'s arguments (None: the
    study file's value, or the default)."""

    study: str  # a shipped study's name or a study file's path
    study_name: str | None = None
    storage: str | None = None  # URL; None: $AUTOTUNE_STORAGE, else the default SQLite file
    n_trials: int | None = None  # study-wide total of finished trials
    timeout: float | None = None  # seconds of this run after which no trial starts
    max_epochs: int | None = None
    seed: int | None = None
    sampler: str | None = None
    pruner: str | None = None
    device: str = "auto"  # auto, cpu, cuda
    data_dir: str | None = None
    artifacts: str | None = None
    workers: int = 1  # processes on this machine
    checkpoint_every: float | None = None  # seconds between a trial's checkpoints
    worker_index: int | None = None  # set in the workers a run starts
    threads: int | None = None  # torch threads of a worker
    allow_changes: bool = False  # resume although the definition or data source changed
    tensorboard: str | None = None  # folder of TensorBoard event files; None: the file's
    mlflow: str | None = None  # MLflow tracking URI; None: the study file's
    launcher: str = "local"  # where the K workers run: "local" processes or a "ray" cluster
    ray_address: str | None = None  # None: $RAY_ADDRESS, else Ray's default
    ray_wait: float | None = None  # seconds to wait for an autoscaled node; None: refuse now
    cpus_per_trial: float | None = None  # what a Ray worker asks for; None: the study file's
    gpus_per_trial: float | None = None


def run(options: Options) -> int:
    """Run (or resume) the search `options` ask for; returns the exit code (0 done, 1 failed,
    2 bad usage or configuration, 130 interrupted), each error told in one line on stderr."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own line per trial replaces it
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return search(options)
    except UsageError as exc:
        _log(f"error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _log("interrupted: finished trials are saved and the running one is marked failed; "
             "run the same command again to resume")
        return EXIT_INTERRUPTED
    except AutotuneError as exc:
        _log(f"error: {exc}")
        return EXIT_FAILURE
    except sqlalchemy.exc.OperationalError as exc:
        _log(f"error: storage unreachable or failing: {str(exc.orig).strip().splitlines()[0]}")
        return EXIT_FAILURE
    except Exception:  # a bug or an unexpected failure: show everything
        traceback.print_exc()
        return EXIT_FAILURE
    finally:
        signal.signal(signal.SIGTERM, previous)
        storage.close_all()  # the SQLite file whole (WAL folded in), whatever the exit
        ray_launch.shutdown()  # leaves a Ray cluster this run joined (no-op otherwise)




def search(args: Options) -> int:
    """`run` without the error handling: raises UsageError, AutotuneError, KeyboardInterrupt."""
    spec = apply_flags(load_spec(args.study), args)
    checkpoint_every_s = checkpoint_every(args.checkpoint_every)
    check_environment()  # a bad setting is refused before storage is touched
    if args.launcher == "ray" and args.worker_index is None:
        join_ray_cluster(args, spec)  # unreachable, or no node fits a worker: exit 2 here
    tensorboard = tensorboard_dir(args, spec)
    if tensorboard is not None:
        from autotune.tracking._tensorboard import check_installed

        check_installed()  # missing: one line, exit 2, nothing stored
    mlflow_uri = args.mlflow or spec.mlflow or None
    if mlflow_uri is not None:
        from autotune.tracking._mlflow import check_installed as check_mlflow

        check_mlflow()
    load_installed()  # plugins (autotune.fast) plug into the hooks of fit and storage
    # a forked worker has the data already; a user's data set is read by its own code
    if "autotune.training._data" not in sys.modules and spec.dataset in plugins.DATASETS \
            and not spec.own_training:
        # the data's files decompress on another core while torch loads (~0.25 s saved)
        idx_files.read_ahead(spec.dataset, args.data_dir)
    url = storage.resolve_url(args.storage)
    # opened before torch loads: a server that does not answer is reported within a second
    store = storage.open_storage(url)
    # torch loads only now, so --help and bad input answer in well under a second of it.
    from autotune.routes import FunctionObjective, ScriptObjective
    from autotune.search._final import evaluate_best
    from autotune.search._notes import write_study_note
    from autotune.search._objective import Objective, requeue_interrupted
    from autotune.training import _artifacts as artifacts
    from autotune.training._data import load_splits
    from autotune.training._fit import resolve_device

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    existing = find_study(store, spec.name)
    if existing is not None:
        existing = wait_for_definition(store, spec.name)  # it may be seconds old
        for diff in check_definition(existing, spec, allow_changes=args.allow_changes):
            _log(f"warning: definition changed ({diff}); continuing because of --allow-changes")
    splits = None  # the user's own training loads its own data
    if spec.own_training:
        source = held = (f"your function {spec.train}" if spec.train
                         else f"your script {spec.script}")
    else:
        splits = load_splits(spec.dataset, data_dir=args.data_dir,
                             val_fraction=spec.val_fraction, split_seed=spec.split_seed,
                             device=device, on_notice=_log, base_dir=Path(spec.path).parent,
                             task=task(spec.loss), target=spec.target,
                             image_size=spec.image_size, bad_images=spec.bad_images)
        source, held = splits.source, splits.held
        if args.worker_index is None and (not plugins.is_builtin_model(spec.model)
                                          or spec.dataset not in plugins.DATASETS):
            check_user_model(spec, splits)  # before the study is created or changed
    if existing is None:
        artifact_dir = artifacts.resolve_dir(args.artifacts, url)
        storage.prepare_for_writes(store)  # every check passed: writes may change the file
        try:
            study = create_study(store, spec, data_source=source,
                                 sampler_seed=spec.seed, artifact_dir=str(artifact_dir))
            _log(f"created study '{spec.name}' in {storage.mask(url)} (" + (
                f"trains with {source})" if splits is None else f"data: {source}; {held})"))
        except optuna.exceptions.DuplicatedStudyError:  # another machine created it just now
            existing = wait_for_definition(store, spec.name)
            check_definition(existing, spec, allow_changes=args.allow_changes)
    if existing is not None:
        stored_dir = existing.user_attrs.get(ARTIFACT_DIR_ATTR)
        artifact_dir = artifacts.resolve_dir(args.artifacts, url) if (
            args.artifacts or not stored_dir) else Path(stored_dir)
        source_diff = check_data_source(existing, source, allow_changes=args.allow_changes)
        if source_diff:
            _log(f"warning: {source_diff}; continuing because of --allow-changes")
        storage.prepare_for_writes(store)
        study = resume_study(store, spec, sampler_seed=worker_seed(spec.seed, existing))
        if args.worker_index is None:
            _log(f"resuming study '{spec.name}' in {storage.mask(url)}: "
                 f"{count_finished(study)} of {spec.n_trials} trials finished (" +
                 (f"trains with {held})" if splits is None else f"data: {held})"))
    if tensorboard is not None and args.worker_index is None:
        from autotune.tracking._tensorboard import study_folder

        study.set_user_attr(TENSORBOARD_ATTR, str(study_folder(tensorboard, spec.name)))
    mlflow_record = None
    if mlflow_uri is not None:
        from autotune.tracking._mlflow import STUDY_ATTR, parent_run

        # the parent run, made or found before any worker starts; workers read it
        mlflow_record = (parent_run(study, mlflow_uri) if args.worker_index is None
                         else study.user_attrs.get(STUDY_ATTR))
    if args.worker_index is None:
        requeued = requeue_interrupted(study)
        if requeued:
            _log(f"requeued interrupted trial(s) {', '.join(map(str, requeued))}; they resume "
                 "from their last checkpoint")
    if args.workers > 1 or (args.launcher == "ray" and args.worker_index is None):
        stopped_early = run_workers(study, spec, args)
    else:
        trial_store = artifacts.open_store(artifact_dir)
        tracker = trackers(spec, tensorboard, mlflow_record)
        objective: Callable[[optuna.Trial], float]
        if spec.train:
            objective = FunctionObjective(spec, device, trial_store, tracker=tracker)
        elif spec.script:
            objective = ScriptObjective(spec, device, trial_store, artifact_dir,
                                        tracker=tracker)
        else:
            assert splits is not None
            objective = Objective(spec, splits, device, trial_store,
                                  checkpoint_every_s=checkpoint_every_s, tracker=tracker)
        objective = tracked(objective, tracker)
        prefix = f"w{args.worker_index} " if args.worker_index is not None else ""
        try:
            stopped_early = optimize(study, spec, objective, prefix)
        finally:
            if tracker is not None:
                tracker.close()  # what it queued, written before this process exits
    if args.worker_index is not None:  # the parent evaluates and summarises once
        return EXIT_FAILURE if stopped_early else EXIT_OK
    test = None if splits is None else evaluate_best(  # the user's code owns its test data
        study, spec, splits, device, store=artifacts.open_store(artifact_dir))
    if mlflow_record is not None:
        log_best_to_mlflow(study, mlflow_record, artifacts.open_store(artifact_dir))
    write_study_note(study)  # the best trial at a glance on the dashboard's study page
    print("\n".join(summary.summary_lines(study, storage.mask(url), test)))
    return EXIT_FAILURE if stopped_early else EXIT_OK


def trackers(spec: StudySpec, tensorboard: Path | None,
             mlflow_record: dict[str, str] | None) -> Any:
    """The trackers this process's trials report to (TensorBoard, MLflow), or None."""
    from autotune.tracking._tracker import Trackers

    chosen: list[Any] = []
    if tensorboard is not None:
        from autotune.tracking._tensorboard import TensorBoardTracker

        chosen.append(TensorBoardTracker(tensorboard, spec.name, spec.metric))
    if mlflow_record is not None:
        from autotune.tracking._mlflow import MLflowTracker

        chosen.append(MLflowTracker(mlflow_record, spec.metric))
    return Trackers(chosen) if chosen else None


def log_best_to_mlflow(study: optuna.Study, record: dict[str, str], store: Any) -> None:
    """The best trial, and its weights where a trial stored them, on the parent run."""
    from autotune.search._final import best_trial
    from autotune.tracking._mlflow import log_best
    from autotune.training._artifacts import WEIGHTS

    best = best_trial(study)
    if best is None:
        return
    weights = None
    for meta in optuna.artifacts.get_all_artifact_meta(best, storage=study._storage):
        if meta.filename == WEIGHTS:
            with store.open_reader(meta.artifact_id) as reader:
                weights = reader.read()
    log_best(study, record, weights, {"number": best.number, "value": best.value,
                                      "params": best.params})


def tensorboard_dir(args: Options, spec: StudySpec) -> Path | None:
    """Where TensorBoard event files go: --tensorboard (relative to here), else the study
    file's `tensorboard` (relative to that file), else nowhere (None)."""
    if args.tensorboard:
        return Path(args.tensorboard).resolve()
    if spec.tensorboard:
        return (Path(spec.path).parent / spec.tensorboard).resolve()
    return None


def check_user_model(spec: StudySpec, splits: Any) -> None:
    """Build the user's model once with each searched param at its first value (choices[0],
    else low) and run one batch of validation data through it: UsageError (exit 2) naming
    the study file if it fails, returns no nn.Module, or gives outputs that do not fit the
    data's classes."""
    import torch

    from autotune.spec._space import model_params, to_config
    from autotune.training import _streams as streams
    from autotune.training._models import build_for

    params = {p.name: p.choices[0] if p.choices is not None else p.low for p in spec.space}
    where = f"{spec.path}: model '{spec.model}'"
    try:
        cfg = to_config(spec, params, seed=spec.seed)
        model = build_for(spec.model, Path(spec.path).parent, cfg, model_params(spec, params),
                          splits.input_shape, splits.n_outputs).to(splits.x_val.device)
        batch = streams.first(splits.x_val, 2)
        with torch.no_grad():
            outputs = model.eval()(batch)
    except UsageError:
        raise
    except Exception as exc:
        if spec.model.startswith("torchvision:"):
            from autotune.training._torchvision import too_small

            small = too_small(spec.model.partition(":")[2], tuple(splits.input_shape))
            if small:
                raise UsageError(f"{spec.path}: {small}") from None
        raise UsageError(f"{where} fails on a first batch: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    wanted = (len(batch), splits.n_outputs)
    regression = task(spec.loss) == "regression"
    fits = isinstance(outputs, torch.Tensor) and (
        outputs.numel() == math.prod(wanted) and len(outputs) == wanted[0] if regression
        else tuple(outputs.shape) == wanted)
    if not fits:
        got = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs)
        per = (f"one per target ({splits.n_outputs} per example)" if regression
               else f"one output per class ({splits.n_outputs} classes)")
        raise UsageError(f"{where} gives outputs of shape {got} for a batch of "
                         f"{wanted[0]}; the loss '{spec.loss}' needs {wanted}: {per}")


def wait_for_definition(store: optuna.storages.BaseStorage, name: str) -> optuna.Study:
    """The stored study, given a few seconds to receive its definition if another process
    is creating it right now (a study without one is then not autotune's)."""
    for _ in range(50):
        study = find_study(store, name)
        if study is not None and DEFINITION_ATTR in study.user_attrs:
            return study
        time.sleep(0.1)
    if study is None:
        raise AutotuneError(f"study '{name}' disappeared from storage while starting")
    return study


def worker_seed(seed: int, study: optuna.Study) -> int:
    """A sampler seed no other process shares: workers on different machines, and resumed
    runs, must not replay each other's random start-up points."""
    key = f"{seed}:{socket.gethostname()}:{os.getpid()}:{len(study.trials)}:{time.time_ns()}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")


def run_workers(study: optuna.Study, spec: StudySpec, args: Options) -> bool:
    """Start K workers (processes here, or tasks on a Ray cluster) and wait for them, in
    rounds while a dead worker's trial waits for its retry; True if one failed."""
    start_round = (ray_round(spec, args) if args.launcher == "ray"
                   else local_round(study, args))

    def watchdog() -> None:
        # A killed worker's trial turns stale after the grace period: mark it failed now, so
        # the retry callback queues it (same params) for a live worker to resume.
        loop.fail_stale_trials(study)

    for _ in range(MAX_WORKER_ROUNDS):
        codes = start_round(watchdog)
        for index, code in enumerate(codes):
            if code < 0:
                _log(f"worker w{index} was killed by signal {-code}; its trial will "
                     "be retried from its last checkpoint")
        if any(code not in (EXIT_OK, EXIT_FAILURE) and code >= 0 for code in codes):
            raise AutotuneError(f"workers exited with codes {codes}; see their errors above")
        if count_finished(study) >= spec.n_trials or EXIT_FAILURE in codes or args.timeout:
            return EXIT_FAILURE in codes
        # Workers stopped while a dead worker's trial still counted as running: wait until it
        # is stale, fail it (queueing its retry), and start another round.
        _log("a dead worker's trial is still marked running; retrying it once it is stale")
        time.sleep(storage.grace_s() + storage.heartbeat_s())
        watchdog()
    _log(f"error: {count_finished(study)} of {spec.n_trials} trials finished after "
         f"{MAX_WORKER_ROUNDS} rounds of workers; rerun the command to go on")
    return True


Round = Callable[[Callable[[], None]], list[int]]  # one round of workers -> exit codes


def local_round(study: optuna.Study, args: Options) -> Round:
    """K processes on this machine: forks of this one where that is safe, else new ones."""
    import torch

    placements = workers.plan(args.workers, args.device, torch.cuda.device_count(),
                              workers.n_cores())
    base = worker_argv(args)
    # a gRPC channel does not survive a fork: behind a storage proxy, workers are new processes
    forking = workers.can_fork(placements) and not isinstance(
        study._storage, optuna.storages.GrpcStorageProxy)
    how = "forks of this process" if forking else "new processes"
    _log(f"starting {args.workers} workers ({how}): " + ", ".join(
        f"w{p.index} {p.device} {p.threads} thread(s)" for p in placements))

    def start(watchdog: Callable[[], None]) -> list[int]:
        if forking:  # each a copy of this process, its data loaded: ~0.1 s to a first trial
            _close_connections(study._storage)
            return workers.fork(
                [functools.partial(run, for_worker(args, p)) for p in placements],
                tick=watchdog, tick_s=storage.heartbeat_s())
        # fresh interpreters, seconds each before their first trial
        return workers.spawn([workers.worker_command(base, p) for p in placements],
                             tick=watchdog, tick_s=storage.heartbeat_s())

    return start


def ray_round(spec: StudySpec, args: Options) -> Round:
    """K tasks on the Ray cluster this run joined, each with the study's resources."""
    wanted = ray_launch.Resources(spec.cpus_per_trial, spec.gpus_per_trial)
    threads = max(1, int(spec.cpus_per_trial))
    device = "cuda" if spec.gpus_per_trial > 0 else "cpu"
    base = worker_argv(portable(args))
    argvs = [[*base, "--workers", "1", "--worker-index", str(i), "--threads", str(threads),
              "--device", device] for i in range(args.workers)]
    _log(f"placing {args.workers} worker(s) on the Ray cluster "
         f"({len(ray_launch.live_nodes())} node(s)), each asking for {wanted}")

    def start(watchdog: Callable[[], None]) -> list[int]:
        return ray_launch.run_round(argvs, wanted, tick=watchdog, tick_s=storage.heartbeat_s())

    return start


def join_ray_cluster(args: Options, spec: StudySpec) -> None:
    """Join the Ray cluster with the study file's folder and $AUTOTUNE_... settings as the
    job's runtime_env, and check that a node can take a worker: UsageError otherwise."""
    ray_launch.check_installed()
    address = ray_launch.resolve_address(args.ray_address)
    env_vars = {k: v for k, v in os.environ.items() if k.startswith("AUTOTUNE_")}
    ray_launch.connect(address, study_folder(args), env_vars)
    ray_launch.check_resources(ray_launch.Resources(spec.cpus_per_trial, spec.gpus_per_trial),
                               wait_s=args.ray_wait or 0.0, workers=args.workers, log=_log)
    _log(f"joined the Ray cluster at {address or 'this machine'}: "
         f"{len(ray_launch.live_nodes())} node(s)")


def study_folder(args: Options) -> Path | None:
    """The folder of a study file given by path (shipped to Ray workers), else None."""
    return Path(args.study).resolve().parent if names_a_file(args.study) else None


def portable(args: Options) -> Options:
    """The run's options as a worker elsewhere must get them: the study file by its name
    within the shipped folder, and every local path absolute."""
    def absolute(path: str | None) -> str | None:
        return None if path is None else str(Path(path).resolve())

    study = Path(args.study).name if study_folder(args) is not None else args.study
    url = storage.resolve_url(args.storage)
    for scheme in ("sqlite:///", "journal:///"):
        if url.startswith(scheme) and not url[len(scheme):].startswith("/"):
            url = scheme + str(Path(url[len(scheme):]).resolve())
    mlflow = args.mlflow
    if mlflow and mlflow.startswith("sqlite:///") and not mlflow[10:].startswith("/"):
        mlflow = "sqlite:///" + str(Path(mlflow[10:]).resolve())
    return dataclasses.replace(args, study=study, storage=url, data_dir=absolute(args.data_dir),
                               artifacts=absolute(args.artifacts),
                               tensorboard=absolute(args.tensorboard), mlflow=mlflow)


def _close_connections(store: optuna.storages.BaseStorage) -> None:
    """Close the database connections this process holds, so no forked worker inherits one
    (each opens its own; the parent reconnects when it next needs one)."""
    engine = getattr(store, "engine", None)
    if isinstance(engine, sqlalchemy.engine.Engine):
        engine.dispose()


def for_worker(args: Options, placement: workers.Placement) -> Options:
    """A forked worker's options: the run's, placed (what `worker_args` gives a new one)."""
    device = "cuda" if placement.device.startswith("cuda") else "cpu"
    return dataclasses.replace(args, workers=1, worker_index=placement.index,
                               threads=placement.threads, device=device)


def worker_argv(args: Options) -> list[str]:
    """The user's flags, as a worker process must receive them."""
    argv = ["--study", args.study]
    for flag in ("study_name", "storage", "n_trials", "timeout", "max_epochs", "seed",
                 "sampler", "pruner", "data_dir", "artifacts", "checkpoint_every",
                 "tensorboard", "mlflow"):
        value = getattr(args, flag)
        if value is not None:
            argv += ["--" + flag.replace("_", "-"), str(value)]
    return argv + (["--allow-changes"] if args.allow_changes else [])


def checkpoint_every(flag: float | None) -> float:
    """Seconds between checkpoints: the flag, else $AUTOTUNE_CHECKPOINT_EVERY_S, else 30."""
    return env.seconds(CHECKPOINT_ENV, CHECKPOINT_EVERY_S) if flag is None else flag


def check_environment() -> None:
    """Read every $AUTOTUNE_... number a run uses: UsageError (one line) for a bad one."""
    storage.heartbeat_s()
    storage.grace_s()
    storage.reconnect_s()
    workers.fork_allowed()


def apply_flags(spec: StudySpec, args: Options) -> StudySpec:
    """CLI flags override the study file; a changed sampler or pruner drops the file's options."""
    changes: dict[str, object] = {}
    for flag, field in (("study_name", "name"), ("n_trials", "n_trials"),
                        ("timeout", "timeout_s"), ("max_epochs", "max_epochs"),
                        ("seed", "seed")):
        if getattr(args, flag) is not None:
            changes[field] = getattr(args, flag)
    if args.sampler is not None and args.sampler != spec.sampler:
        changes.update(sampler=args.sampler, sampler_options={})
    if args.pruner is not None and args.pruner != spec.pruner:
        changes.update(pruner=args.pruner, pruner_options={})
    for flag in ("cpus_per_trial", "gpus_per_trial"):
        if getattr(args, flag) is not None:
            changes[flag] = getattr(args, flag)
    if args.launcher != "ray":
        ray_flags = ("ray_address", "ray_wait", "cpus_per_trial", "gpus_per_trial")
        given = [f"--{f.replace('_', '-')}" for f in ray_flags if getattr(args, f) is not None]
        if given:
            raise UsageError(f"{', '.join(given)} place workers on a Ray cluster: add "
                             "--launcher ray, or leave them out")
    if args.study_name is not None:
        check_study_name(args.study_name, "--study-name")
    spec = dataclasses.replace(spec, **changes)  # type: ignore[arg-type]
    check_algorithms(spec)
    return spec


def optimize(study: optuna.Study, spec: StudySpec, objective: Callable[[optuna.Trial], float],
             prefix: str = "") -> bool:
    """Run trials until the study holds spec.n_trials finished ones; True if failures ended it."""
    if budget.n_claimed(study) >= spec.n_trials:
        if not prefix:
            _log(f"study already has {count_finished(study)} finished trials (target "
                 f"{spec.n_trials}); raise --n-trials to run more")
        return False
    stop = budget.StopAtTotal(spec.n_trials, MAX_CONSECUTIVE_FAILURES)
    with _progress(spec.n_trials, count_finished(study), enabled=not prefix) as bar:
        def log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            _log(prefix + summary.trial_line(trial, spec.max_epochs, metric_name(study)), bar)
            if trial.state in FINISHED and bar is not None:
                bar.update(1)

        loop.run_trials(study, budget.guard(objective, spec.n_trials),
                        stop=lambda: stop.stopped, timeout_s=spec.timeout_s,
                        catch=(Diverged, UserCodeError, budget.Surplus),
                        callbacks=[log_trial, stop])
    if stop.failed_out:
        _log(f"{prefix}error: stopped after {stop.n_failed} failed trials in a row; the reasons "
             "are on the lines above and in each trial's fail_reason")
    return stop.failed_out


class _progress:
    """A tqdm bar on stderr when it is a terminal; otherwise nothing."""

    def __init__(self, total: int, initial: int, enabled: bool = True) -> None:
        self.total, self.initial, self.enabled = total, initial, enabled
        self.bar = None

    def __enter__(self):  # type: ignore[no-untyped-def]
        if self.enabled and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=self.total, initial=self.initial, unit="trial",
                            file=sys.stderr, dynamic_ncols=True)
        return self.bar

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def _log(message: str, bar: object | None = None) -> None:
    """Progress and logs go to stderr (stdout is for results), above any progress bar."""
    if bar is not None:
        bar.write(message, file=sys.stderr)  # type: ignore[attr-defined]
    else:
        print(message, file=sys.stderr, flush=True)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")

