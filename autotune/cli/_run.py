"""`autotune run --study NAME` (`python -m autotune.run`): run (or resume) a search.

A thin wrapper over the one entry `autotune.tune` also wraps (`search._session.run`): the
flags, parsed into its `Options`.
"""

from __future__ import annotations

import argparse

from autotune.cli import _common as cli
from autotune.search import _samplers as samplers
from autotune.search._session import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Options,
    run,
)
from autotune.spec._config import CHECKPOINT_ENV, CHECKPOINT_EVERY_S, DEVICES
from autotune.spec._spec import shipped_names
from autotune.storage import _storage as storage

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=cli.prog("run"),
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
    parser.add_argument("--n-trials", type=cli.positive_int, metavar="N",
                        help="study-wide total of finished (complete + pruned) trials to reach, "
                             "counting earlier runs (default: the study file's budget.n_trials)")
    parser.add_argument("--timeout", type=cli.positive_float, metavar="SECONDS",
                        help="start no new trial after this many seconds of this run "
                             "(default: budget.timeout_s; none)")
    parser.add_argument("--max-epochs", type=cli.positive_int, metavar="N",
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
    parser.add_argument("--workers", type=cli.positive_int, default=1, metavar="K",
                        help="workers sharing the study: processes on this machine (CPU "
                             "threads divided among them, GPUs shared round-robin), or tasks "
                             "on a Ray cluster with --launcher ray; other machines also join "
                             "by running the same command with the same --storage "
                             "(default: %(default)s)")
    parser.add_argument("--launcher", choices=("local", "ray"), default="local",
                        help="where the --workers run: local processes, or tasks on a Ray "
                             "cluster (needs pip install 'autotune[ray]'; the study file's "
                             "folder is shipped to them) (default: %(default)s)")
    parser.add_argument("--ray-address", metavar="HOST:PORT",
                        help="the Ray cluster's head node (default: $RAY_ADDRESS, else the "
                             "cluster `ray start` began on this machine, else a new one here)")
    parser.add_argument("--ray-wait", type=cli.non_negative_float, metavar="SECONDS",
                        help="on an autoscaling Ray cluster (KubeRay, the cluster launcher): "
                             "when no node can run a worker yet, ask the autoscaler for the "
                             "workers' resources and wait this long for such a node before "
                             "refusing (default: 0, refuse at once)")
    parser.add_argument("--cpus-per-trial", type=cli.positive_float, metavar="N",
                        help="CPUs each Ray worker asks for; fractions share a CPU (default: "
                             "the study file's cpus_per_trial, else 1)")
    parser.add_argument("--gpus-per-trial", type=cli.non_negative_float, metavar="N",
                        help="GPUs each Ray worker asks for; 0.25 puts four workers on one "
                             "GPU (default: the study file's gpus_per_trial, else 0: CPU)")
    parser.add_argument("--checkpoint-every", type=cli.non_negative_float, metavar="SECONDS",
                        help="save a running trial's training state at the end of an epoch "
                             "once this many seconds passed since the last save; a trial "
                             "whose worker dies resumes from there. 0 = after every epoch "
                             f"(default: ${CHECKPOINT_ENV}, else {CHECKPOINT_EVERY_S:g})")
    parser.add_argument("--tensorboard", metavar="DIR",
                        help="write TensorBoard event files, one folder per trial under "
                             "DIR/<study>/trial-<n> (default: the study file's tensorboard "
                             "key, else none; needs pip install 'autotune[tensorboard]')")
    parser.add_argument("--mlflow", metavar="URI",
                        help="log to MLflow at this tracking URI (e.g. sqlite:///mlflow.db, "
                             "no server needed): a parent run per study, a child run per "
                             "trial (default: the study file's mlflow key, else none; needs "
                             "pip install 'autotune[mlflow]')")
    parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=cli.positive_int, help=argparse.SUPPRESS)
    parser.add_argument("--allow-changes", action="store_true",
                        help="resume even if the study definition or data source differ from "
                             "what the study was created with")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the flags and run the search; returns the exit code."""
    return run(Options(**vars(build_parser().parse_args(argv))))
