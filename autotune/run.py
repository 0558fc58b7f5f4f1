"""`python -m autotune.run --study NAME`: run (or resume) a hyperparameter search."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import optuna
import sqlalchemy.exc

from autotune import samplers, storage, summary
from autotune.config import DEVICES
from autotune.errors import AutotuneError, Diverged, UsageError
from autotune.spec import StudySpec, check_algorithms, load_spec, shipped_names
from autotune.study import (
    ARTIFACT_DIR_ATTR,
    FINISHED,
    check_data_source,
    check_definition,
    count_finished,
    create_study,
    find_study,
    resume_study,
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# A run stops (exit 1) after this many failed trials in a row: the search space or the data
# is broken, and trying more would loop forever without finishing a trial.
MAX_CONSECUTIVE_FAILURES = 10


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m autotune.run",
        description="Run or resume a hyperparameter search declared in a study file. Running "
                    "the same command again continues the same study. Settings come from, in "
                    "order: these flags, environment variables, the study file, defaults.",
        epilog="exit codes: 0 done, 1 runtime failure, 2 bad usage or configuration, "
               "130 interrupted (the study is saved; rerun the command to resume)")
    parser.add_argument("--study", required=True, metavar="NAME|PATH",
                        help=f"a shipped study ({', '.join(shipped_names())}) or the path of "
                             "your own .toml study file")
    parser.add_argument("--study-name", metavar="NAME",
                        help="name of the study in storage (default: the file's `name`, else "
                             "its file name); use a new name to start over")
    parser.add_argument("--storage", metavar="URL",
                        help=f"where studies live (default: ${storage.ENV_VAR}, else "
                             f"{storage.DEFAULT_URL} in the working directory); e.g. "
                             "postgresql://user@host/db, mysql://root@host/db, "
                             "journal:///path/file.log")
    parser.add_argument("--n-trials", type=_positive_int, metavar="N",
                        help="study-wide total of finished (complete + pruned) trials to reach, "
                             "counting earlier runs (default: the study file's budget.n_trials)")
    parser.add_argument("--timeout", type=_positive_float, metavar="SECONDS",
                        help="start no new trial after this many seconds of this run "
                             "(default: budget.timeout_s; none)")
    parser.add_argument("--max-epochs", type=_positive_int, metavar="N",
                        help="epochs per trial unless pruned (default: budget.max_epochs)")
    parser.add_argument("--seed", type=int, help="sampler and training seed (default: the "
                                                 "study file's seed)")
    parser.add_argument("--sampler", choices=sorted(samplers.SAMPLERS),
                        help="search algorithm (default: the study file's [sampler] name)")
    parser.add_argument("--pruner", choices=sorted(samplers.PRUNERS),
                        help="early-stopping rule (default: the study file's [pruner] name)")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where to train; auto = cuda if available, else cpu "
                             "(default: %(default)s)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="dataset folder, e.g. DIR/MNIST/raw/ (default: "
                             "$AUTOTUNE_DATA_DIR, else ~/.cache/autotune/data)")
    parser.add_argument("--artifacts", metavar="DIR",
                        help="artifact store for checkpoints, learning curves and weights; "
                             "must be reachable by every worker (default: the one stored on "
                             "the study, else $AUTOTUNE_ARTIFACTS, else beside a SQLite or "
                             "journal file, else ./autotune-artifacts)")
    parser.add_argument("--allow-changes", action="store_true",
                        help="resume even if the study definition or data source differ from "
                             "what the study was created with")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own line per trial replaces it
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return run(args)
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


def run(args: argparse.Namespace) -> int:
    spec = apply_flags(load_spec(args.study), args)
    # torch loads only now, so --help and bad input answer in well under a second of it.
    from autotune import artifacts
    from autotune.data import load_splits
    from autotune.final import evaluate_best
    from autotune.objective import Objective
    from autotune.train import resolve_device

    device = resolve_device(args.device)
    url = storage.resolve_url(args.storage)
    store = storage.open_storage(url)
    existing = find_study(store, spec.name)
    if existing is not None:
        for diff in check_definition(existing, spec, allow_changes=args.allow_changes):
            _log(f"warning: definition changed ({diff}); continuing because of --allow-changes")
    splits = load_splits(spec.dataset, data_dir=args.data_dir, val_fraction=spec.val_fraction,
                         split_seed=spec.split_seed, device=device, on_notice=_log)
    artifact_dir = artifacts.resolve_dir(args.artifacts, url)
    if existing is not None and not args.artifacts:
        artifact_dir = Path(existing.user_attrs.get(ARTIFACT_DIR_ATTR, artifact_dir))
    if existing is None:
        study = create_study(store, spec, data_source=splits.source, sampler_seed=spec.seed,
                             artifact_dir=str(artifact_dir))
        _log(f"created study '{spec.name}' in {storage.mask(url)} (data: {splits.source})")
    else:
        source_diff = check_data_source(existing, splits.source,
                                        allow_changes=args.allow_changes)
        if source_diff:
            _log(f"warning: {source_diff}; continuing because of --allow-changes")
        # Offset the sampler seed by the trials so far: a resumed run must not replay the
        # random start-up points of the first run.
        study = resume_study(store, spec, sampler_seed=spec.seed + len(existing.trials))
        _log(f"resuming study '{spec.name}' in {storage.mask(url)}: "
             f"{count_finished(study)} of {spec.n_trials} trials finished")
    objective = Objective(spec, splits, device, artifacts.open_store(artifact_dir))
    stopped_early = optimize(study, spec, objective)
    test = evaluate_best(study, spec, splits, device)
    print("\n".join(summary.summary_lines(study, storage.mask(url), test)))
    return EXIT_FAILURE if stopped_early else EXIT_OK


def apply_flags(spec: StudySpec, args: argparse.Namespace) -> StudySpec:
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
    spec = dataclasses.replace(spec, **changes)  # type: ignore[arg-type]
    check_algorithms(spec)
    return spec


def optimize(study: optuna.Study, spec: StudySpec, objective: Callable[[optuna.Trial], float]
             ) -> bool:
    """Run trials until the study holds spec.n_trials finished ones; True if failures ended it."""
    remaining = spec.n_trials - count_finished(study)
    if remaining <= 0:
        _log(f"study already has {count_finished(study)} finished trials (target "
             f"{spec.n_trials}); raise --n-trials to run more")
        return False
    stop = _StopAtTotal(spec.n_trials, max_consecutive_failures=MAX_CONSECUTIVE_FAILURES)
    with _progress(spec.n_trials, count_finished(study)) as bar:
        def log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            _log(summary.trial_line(trial, spec.max_epochs), bar)
            if trial.state in FINISHED and bar is not None:
                bar.update(1)

        study.optimize(objective, n_trials=None, timeout=spec.timeout_s, catch=(Diverged,),
                       callbacks=[log_trial, stop], gc_after_trial=False)
    if stop.failed_out:
        _log(f"error: stopped after {stop.n_failed} failed trials in a row; the reasons are "
             "on the lines above and in each trial's fail_reason")
    return stop.failed_out


class _StopAtTotal:
    """Stops the study at a study-wide total of finished trials, or after a run of failures."""

    def __init__(self, n_trials: int, max_consecutive_failures: int) -> None:
        self.n_trials = n_trials
        self.max_consecutive_failures = max_consecutive_failures
        self.n_failed = 0  # consecutive failures in this run
        self.failed_out = False

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        failed = trial.state == optuna.trial.TrialState.FAIL
        self.n_failed = self.n_failed + 1 if failed else 0
        if count_finished(study) >= self.n_trials:
            study.stop()
        elif self.n_failed >= self.max_consecutive_failures:
            self.failed_out = True
            study.stop()


class _progress:
    """A tqdm bar on stderr when it is a terminal; otherwise nothing."""

    def __init__(self, total: int, initial: int) -> None:
        self.total, self.initial = total, initial
        self.bar = None

    def __enter__(self):  # type: ignore[no-untyped-def]
        if sys.stderr.isatty():
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


if __name__ == "__main__":
    sys.exit(main())
