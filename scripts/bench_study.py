"""A whole search: autotune against Optuna's own PyTorch example, the same study on one machine.

  autotune  `python -m autotune.run --study studies/bench/fashion-mlp.toml` (the example's
            study as a study file; see its comments for the one difference in the space),
            on a fresh SQLite file, with its artifact store (checkpoints, learning curves).
  example   scripts/baseline_optuna_example.py: the example as published (DataLoader per
            image, in-memory storage), seeded.

autotune runs once per --workers count (default 1 and 2): `autotune` is one process with the
machine's torch threads, `autotune-w2` two workers of cores / 2 threads each (on a 2-core CPU,
forks of one thread each), whose trials run two at a time; each is compared with the example.
`autotune-plain` is `autotune` with the speed-up layer off ($AUTOTUNE_PLUGINS=none: plain
torch and Optuna's RDBStorage), so the layer's worth is visible beside it (--no-plain skips).

For each seed both run as subprocesses, in alternating order, with the same budget (trials,
epochs, timeout). Printed per seed and as medians: wall time (the whole process: start-up,
data, search, and for autotune the test evaluation of the best configuration), epochs
trained, the best validation accuracy (each tool's best value; the example's is a trial's
last epoch, autotune's its best epoch) and the best accuracy of any epoch, and the time from
the first trial's start until a trial that reached --target accuracy ended.

Then autotune's framework overhead per trial (sampling, pruning, storage writes, checkpoints,
learning curves, model and optimizer construction: everything but the model's own work,
training and validation passes) from a run of the same study with a trivial budget (1
example per batch, 1 batch per epoch, 1 validation example, no pruning): per trial, the time
from its start to the next trial's start less its training and validation time; the median
trial, the mean after the first (which pays the process's one-time warm-up), and the median
with validation counted as overhead: those of the median of --overhead-runs such runs (3),
each run's figure printed beside it, since one run's drifts with the machine's speed.
--profile adds where it goes: the same run again in-process, with a wall-clock timer around
each of a list of calls.

    python scripts/bench_study.py                  # 3 seeds x 100 trials each side: ~25 min here
    python scripts/bench_study.py --seeds 0 --n-trials 30
    python scripts/bench_study.py --quick          # ~1 min: 1 seed, 6 trials of 2 epochs
    python scripts/bench_study.py --workers 1      # autotune in one process only
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.cli._common import positive_int
from autotune.fast._hooks import FAST_STORAGE_ENV
from autotune.plugins import GROUP as PLUGINS_GROUP
from autotune.plugins._installed import ENV as PLUGINS_ENV

REPO = Path(__file__).resolve().parent.parent
STUDY_FILE = REPO / "studies" / "bench" / "fashion-mlp.toml"
EXAMPLE = REPO / "scripts" / "baseline_optuna_example.py"
# The overhead run's training budget; with --pruner none every trial runs every epoch: the
# most reports, checkpoints and storage writes a trial can make.
OVERHEAD_FIXED = """
[fixed]
batch_size = 1
max_batches_per_epoch = 1
val_subset = 1
"""
OVERHEAD_FLAGS = ["--pruner", "none"]


@dataclass(frozen=True)
class Run:
    """What one search did, read back from its trials."""

    tool: str
    seed: int
    wall_s: float  # the subprocess, start to exit
    trials: list[dict[str, Any]]  # state, value, intermediate_values, start, complete

    @property
    def finished(self) -> list[dict[str, Any]]:
        return [t for t in self.trials if t["state"] in ("COMPLETE", "PRUNED")]

    @property
    def epochs(self) -> int:
        return sum(len(t["intermediate_values"]) for t in self.trials)

    @property
    def best_value(self) -> float:
        return max((t["value"] for t in self.trials if t["state"] == "COMPLETE"), default=0.0)

    @property
    def best_epoch_accuracy(self) -> float:
        return max((v for t in self.trials for v in t["intermediate_values"]), default=0.0)

    @property
    def search_s(self) -> float:
        return max(t["complete"] for t in self.finished) - min(t["start"] for t in self.trials)

    def time_to(self, target: float) -> float | None:
        """Seconds from the first trial's start until the first trial reaching `target` ended."""
        start = min(t["start"] for t in self.trials)
        reached = [t["complete"] for t in self.finished
                   if max(t["intermediate_values"], default=0.0) >= target]
        return min(reached) - start if reached else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated (default 0,1,2)")
    parser.add_argument("--n-trials", type=positive_int, default=100)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=600.0, help="per search, seconds")
    parser.add_argument("--target", type=float, default=0.82,
                        help="accuracy for time-to-target (default 0.82)")
    parser.add_argument("--overhead-trials", type=positive_int,
                        help="trials of the overhead run (default: --n-trials)")
    parser.add_argument("--overhead-runs", type=positive_int, default=3, metavar="N",
                        help="overhead runs, one after the other; the figure is the median run "
                             "(default 3: one run's figure drifts with the machine's speed)")
    parser.add_argument("--profile", action="store_true",
                        help="also break the overhead down (the overhead run again, with timers "
                             "around the calls that make a trial)")
    parser.add_argument("--workers", type=worker_counts, default=[1, 2], metavar="K[,K...]",
                        help="autotune's study runs, per seed once with each --workers K "
                             "(default 1,2: one process, and two forked processes of one thread "
                             "each, as on a 2-core CPU); the overhead runs use 1")
    parser.add_argument("--no-plain", action="store_true",
                        help="skip the runs with the speed-up layer off")
    parser.add_argument("--skip-example", action="store_true",
                        help="run autotune only (no ratios)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to this long for the 1-minute load to fall below 1")
    parser.add_argument("--quick", action="store_true",
                        help="1 seed, 6 trials of 2 epochs, a 6-trial overhead run")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.n_trials, args.epochs = "0", 6, 2
    seeds = [int(s) for s in args.seeds.split(",")]
    variants: dict[str, tuple[int, dict[str, str]]] = {
        autotune_name(k): (k, {}) for k in args.workers}
    if not args.no_plain:
        variants["autotune-plain"] = (1, {PLUGINS_ENV: "none"})
    tools = [*variants] + ([] if args.skip_example else ["example"])
    wait_quiet(args.wait_quiet)

    loads = [os.getloadavg()[0]]
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for i, seed in enumerate(seeds):
            for tool in tools if i % 2 == 0 else tools[::-1]:
                if tool == "example":
                    run = run_example(tmp, seed, args)
                else:
                    workers, env = variants[tool]
                    with environment(env):
                        run = run_autotune(tmp, seed, args, name=tool,
                                           extra=("--workers", str(workers)))
                runs.append(run)
                loads.append(os.getloadavg()[0])
                log(f"{tool} seed {seed}: {run.wall_s:.1f} s, {len(run.finished)} trials, "
                    f"{run.epochs} epochs, best {run.best_value:.4f}")
        measured = sorted((measure_overhead(tmp, args, f"overhead-{k}")
                           for k in range(args.overhead_runs)), key=lambda run: run["median_ms"])
        overhead = measured[(len(measured) - 1) // 2]  # the median run (the lower of two)
        # the same run on Optuna's RDBStorage as it is: what the batched storage path is worth
        with environment({FAST_STORAGE_ENV: "0"}):
            plain = measure_overhead(tmp, args, "overhead-plain-storage")
        layer_off = None
        if not args.no_plain:  # and with the whole layer off
            with environment({PLUGINS_ENV: "none"}):
                layer_off = measure_overhead(tmp, args, "overhead-layer-off")
        # with TensorBoard event files written per trial (issue 26), when it is installed
        tracked = None
        if importlib.util.find_spec("tensorboard") is not None:
            tracked = sorted((measure_overhead(tmp, args, f"overhead-tensorboard-{k}",
                                               ("--tensorboard", str(tmp / f"tb-{k}")))
                              for k in range(args.overhead_runs)),
                             key=lambda run: run["median_ms"])[(args.overhead_runs - 1) // 2]
        mlflow_run = None
        if importlib.util.find_spec("mlflow") is not None:
            mlflow_run = sorted((measure_overhead(tmp, args, f"overhead-mlflow-{k}",
                                                  ("--mlflow", f"sqlite:///{tmp}/mlflow-{k}.db"))
                                 for k in range(args.overhead_runs)),
                                key=lambda run: run["median_ms"])[(args.overhead_runs - 1) // 2]
        loads.append(os.getloadavg()[0])
        breakdown = profile_overhead(tmp, args) if args.profile else None

    print(f"study: {STUDY_FILE.name} vs {EXAMPLE.name}; autotune --workers "
          f"{','.join(map(str, args.workers))} ({', '.join(variants)}); "
          f"{args.n_trials} trials, {args.epochs} "
          f"epochs, timeout {args.timeout:g} s; seeds {args.seeds}; 1-minute load average "
          f"{min(loads):.2f}-{max(loads):.2f} (sampled between runs)")
    report(runs, tools, seeds, args.target)
    each = ", ".join(f"{run['median_ms']:.1f}" for run in measured)
    print(f"framework overhead per trial (autotune, SQLite, {overhead['trials']} trials of a "
          f"trivial budget, the median of {len(measured)} runs: {each} ms): "
          f"{overhead['median_ms']:.1f} ms median trial (target <= 10 ms), "
          f"{overhead['mean_after_first_ms']:.1f} ms mean after the first; the first trial "
          f"{overhead['first_ms']:.0f} ms (one-time warm-up); excluded: training "
          f"{overhead['train_ms']:.1f} ms/trial and validation {overhead['val_ms']:.1f} "
          f"ms/trial ({overhead['median_with_val_ms']:.1f} ms median with validation)")
    print(f"the same on the plain storage path ({FAST_STORAGE_ENV}=0, Optuna's RDBStorage "
          f"with retries only; one run): {plain['median_ms']:.1f} ms median trial, "
          f"{plain['median_ms'] / overhead['median_ms']:.1f}x the batched path's")
    if layer_off is not None:
        print(f"the same with the speed-up layer off ({PLUGINS_ENV}=none: no plugin of "
              f"{PLUGINS_GROUP}; one run): {layer_off['median_ms']:.1f} ms median trial, "
              f"{layer_off['median_ms'] / overhead['median_ms']:.1f}x the layer's")
    if tracked is not None:
        print(f"the same with --tensorboard (event files per trial; the median of "
              f"{args.overhead_runs} runs): {tracked['median_ms']:.1f} ms median trial, "
              f"{tracked['median_ms'] - overhead['median_ms']:+.1f} ms a trial (target <= 2 ms)")
    if mlflow_run is not None:
        print(f"the same with --mlflow (a local SQLite tracking store; the median of "
              f"{args.overhead_runs} runs): {mlflow_run['median_ms']:.1f} ms median trial, "
              f"{mlflow_run['median_ms'] - overhead['median_ms']:+.1f} ms a trial "
              "(target <= 20 ms)")
    if breakdown:
        print_breakdown(breakdown)
    return 0


def report(runs: list[Run], tools: list[str], seeds: list[int], target: float) -> None:
    by = {(r.tool, r.seed): r for r in runs}
    print(f"{'seed':>4} {'tool':<11} {'wall s':>7} {'search s':>8} {'trials':>6} {'epochs':>6} "
          f"{'best':>7} {'best ep':>7} {f'to {target:g}':>8}")
    for seed in seeds:
        for tool in tools:
            r = by[tool, seed]
            reach = r.time_to(target)
            print(f"{seed:>4} {tool:<11} {r.wall_s:>7.1f} {r.search_s:>8.1f} "
                  f"{len(r.finished):>6} {r.epochs:>6} {r.best_value:>7.4f} "
                  f"{r.best_epoch_accuracy:>7.4f} {fmt_s(reach):>8}")
    if "example" not in tools:  # --skip-example: nothing to compare with
        return

    def median(tool: str, metric: str) -> float:
        values = [getattr(by[tool, s], metric) for s in seeds]
        return statistics.median(values)

    def median_reach(tool: str) -> float | None:
        values = [by[tool, s].time_to(target) for s in seeds]
        reached = [v for v in values if v is not None]
        return statistics.median(reached) if len(reached) == len(values) else None

    for tool in tools:
        if tool != "example":
            compare(tool, median, median_reach, target)


def compare(tool: str, median: Any, median_reach: Any, target: float) -> None:
    """The medians of one autotune variant against the example's, and the targets."""
    wall = (median(tool, "wall_s"), median("example", "wall_s"))
    best = (median(tool, "best_value"), median("example", "best_value"))
    best_ep = (median(tool, "best_epoch_accuracy"), median("example", "best_epoch_accuracy"))
    reach = (median_reach(tool), median_reach("example"))
    ratio = wall[1] / wall[0]
    gap = 100 * (best[1] - best[0])
    verdict = ("the layer off: its worth, no target" if tool.endswith("-plain")
               else f"target >= 8x: {'met' if ratio >= 8 else 'MISSED'}")
    print(f"median  {tool} {wall[0]:.1f} s, example {wall[1]:.1f} s: {ratio:.1f}x less wall "
          f"time ({verdict})")
    print(f"median  best accuracy {tool} {best[0]:.4f}, example {best[1]:.4f} "
          f"({gap:+.1f} points for the example; target within 1.5: "
          f"{'met' if gap <= 1.5 else 'MISSED'}); best epoch {best_ep[0]:.4f} vs "
          f"{best_ep[1]:.4f}")
    if None in reach:
        print(f"median  time to {target:g}: not reached by every run of both")
    else:
        print(f"median  time to {target:g}: {tool} {reach[0]:.1f} s, example "
              f"{reach[1]:.1f} s ({reach[1] / reach[0]:.1f}x)")


@contextlib.contextmanager
def environment(variables: dict[str, str]) -> Iterator[None]:
    """Environment variables set for the subprocesses started inside, restored after."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def autotune_name(n_workers: int) -> str:
    return "autotune" if n_workers == 1 else f"autotune-w{n_workers}"


def worker_counts(text: str) -> list[int]:
    """argparse type: comma-separated worker counts, each >= 1, none repeated."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be whole numbers >= 1, comma-separated, "
                                         f"got {text!r}") from None
    if not counts or min(counts) < 1 or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"must be whole numbers >= 1, comma-separated, none "
                                         f"repeated, got {text!r}")
    return counts


def run_autotune(tmp: Path, seed: int, args: argparse.Namespace, study: Path = STUDY_FILE,
                 n_trials: int | None = None, name: str = "autotune",
                 extra: tuple[str, ...] = ()) -> Run:
    db = tmp / f"{name}-{seed}.db"
    command = [sys.executable, "-m", "autotune.run", "--study", str(study), "--storage",
               f"sqlite:///{db}", "--artifacts", str(tmp / f"{name}-{seed}.artifacts"),
               "--n-trials", str(n_trials or args.n_trials), "--max-epochs", str(args.epochs),
               "--timeout", str(args.timeout), "--seed", str(seed), "--device", "cpu", *extra]
    # run from the temporary folder: what a run writes beside itself (MLflow's ./mlruns
    # artifact root for a SQLite tracking store) stays out of the checkout
    wall_s = timed(command, cwd=tmp)
    import optuna

    url = f"sqlite:///{db}"
    loaded = optuna.load_study(study_name=optuna.get_all_study_names(url)[0], storage=url)
    trials = [{
        "state": t.state.name, "value": t.value,
        "intermediate_values": [t.intermediate_values[k] for k in sorted(t.intermediate_values)],
        "start": t.datetime_start.timestamp(),
        "complete": t.datetime_complete.timestamp() if t.datetime_complete else None,
        "train_time_s": t.user_attrs.get("train_time_s", 0.0),
        "val_time_s": t.user_attrs.get("val_time_s", 0.0),
    } for t in loaded.get_trials(deepcopy=False)]
    return Run(name, seed, wall_s, trials)


def run_example(tmp: Path, seed: int, args: argparse.Namespace) -> Run:
    out = tmp / f"example-{seed}.json"
    command = [sys.executable, str(EXAMPLE), "--seed", str(seed), "--n-trials",
               str(args.n_trials), "--epochs", str(args.epochs), "--timeout", str(args.timeout),
               "--root", str(example_root(tmp)), "--json", str(out)]
    # run from the temporary folder: what a run writes beside itself (MLflow's ./mlruns
    # artifact root for a SQLite tracking store) stays out of the checkout
    wall_s = timed(command, cwd=tmp)
    return Run("example", seed, wall_s, json.loads(out.read_text()))


def example_root(tmp: Path) -> Path:
    sys.path.insert(0, str(EXAMPLE.parent))
    from baseline_optuna_example import torchvision_root

    return torchvision_root(tmp / "torchvision")  # gunzipped once, outside the timed runs


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    wall_s = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} exited {done.returncode}:\n"
                         f"{done.stderr[-3000:]}")
    return wall_s


def overhead_study(tmp: Path) -> Path:
    """The bench study with a trivial training budget in place of its [fixed] table."""
    text = re.sub(r"\[fixed\].*?(?=\n\[)", OVERHEAD_FIXED.strip() + "\n", STUDY_FILE.read_text(),
                  flags=re.DOTALL)
    path = tmp / "bench-overhead.toml"
    path.write_text(text)
    return path


def measure_overhead(tmp: Path, args: argparse.Namespace, name: str = "overhead",
                     more: tuple[str, ...] = ()) -> dict[str, float]:
    """One overhead run, on a fresh SQLite file named after `name` (`more`: its flags)."""
    n_trials = args.overhead_trials or args.n_trials
    run = run_autotune(tmp, 0, args, overhead_study(tmp), n_trials, name=name,
                       extra=tuple(OVERHEAD_FLAGS) + more)
    n = len(run.finished)
    # a trial's cycle: its start to the next one's start (its bookkeeping, the callbacks and
    # the next ask included), minus its training and its validation passes (the model's own
    # work, as training is: 1 example each here); the first also pays the process's one-time
    # warm-up (torch.optim's first use imports torch._dynamo, ~1 s), the median does not
    ordered = sorted(run.finished, key=lambda t: t["start"])
    pairs = list(zip(ordered, ordered[1:], strict=False))
    cycles = [1000 * (b["start"] - a["start"] - a["train_time_s"] - a["val_time_s"])
              for a, b in pairs]
    with_val = [1000 * (b["start"] - a["start"] - a["train_time_s"]) for a, b in pairs]

    def median(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    return {"trials": n, "median_ms": median(cycles), "median_with_val_ms": median(with_val),
            "mean_after_first_ms": statistics.mean(cycles[1:]) if cycles[1:] else float("nan"),
            "first_ms": cycles[0] if cycles else float("nan"),
            "train_ms": 1000 * sum(t["train_time_s"] for t in run.finished) / n,
            "val_ms": 1000 * sum(t["val_time_s"] for t in run.finished) / n}


# (label, the calls it times: (module, attribute path) as looked up where they are called);
# only the rows that contain `fit` (the whole trial, fit) include the trivial training
TIMED: list[tuple[str, list[tuple[str, str]]]] = [
    ("a trial, start to end (autotune.search._loop.run_trial)",
     [("autotune.search._loop", "run_trial")]),
    ("  ask: queued-trial check, trial creation", [("optuna.study.study", "Study.ask")]),
    ("    trial creation (storage)", [
        ("autotune.fast._batched", "BatchedRDBStorage._create_new_trial")]),
    ("  first heartbeat", [("autotune.fast._batched", "BatchedRDBStorage.record_heartbeat")]),
    ("  suggest_* (TPE sampling inside)", [("autotune.spec._space", "suggest")]),
    ("    TPE: search space + sampling", [
        ("optuna.samplers", "TPESampler.infer_relative_search_space"),
        ("optuna.samplers", "TPESampler.sample_relative")]),
    ("  trial listings (TPE, pruner, queued check)", [
        ("autotune.fast._batched", "BatchedRDBStorage._get_trials")]),
    ("  model construction", [("autotune.search._objective", "build_for")]),
    ("  fit (training, evaluation, optimizer)", [("autotune.search._objective", "fit")]),
    ("    optimizer construction", [("autotune.training._fit", "build_optimizer")]),
    ("  report + should_prune", [("optuna.trial", "Trial.report"),
                                 ("optuna.trial", "Trial.should_prune")]),
    ("  learning curve + weights upload", [("autotune.training._artifacts", "upload_json"),
                                           ("autotune.training._artifacts", "upload_weights")]),
    ("  storage writes (batched, incl. the finish)", [
        ("autotune.fast._batched", "BatchedRDBStorage._write")]),
    ("  tell (finishing the trial)", [("autotune.search._loop", "_tell_with_warning")]),
    ("budget counts not made in the trial's creation or finish (none on SQLite)", [
        ("autotune.search._budget", "n_claimed")]),
    ("stale-trial checks (every 10 s)", [("autotune.search._loop", "fail_stale_trials")]),
]


def profile_overhead(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The overhead run again, in this process, with a wall-clock timer around each call
    TIMED names (nested calls of one row count once): ms per trial."""
    from autotune.cli import _run as autotune_run

    n_trials = args.overhead_trials or args.n_trials
    db = tmp / "profile.db"
    argv = ["--study", str(overhead_study(tmp)), "--storage", f"sqlite:///{db}", "--artifacts",
            str(tmp / "profile.artifacts"), "--n-trials", str(n_trials), "--max-epochs",
            str(args.epochs), "--device", "cpu", *OVERHEAD_FLAGS]
    totals = {label: 0.0 for label, _ in TIMED}
    restore: list[tuple[Any, str, Any]] = []
    for label, calls in TIMED:
        depth = [0]  # calls of this row in progress (recursion, or one timed call in another)
        for module_name, path in calls:
            owner: Any = importlib.import_module(module_name)
            *parents, name = path.split(".")
            for parent in parents:
                owner = getattr(owner, parent)
            original = owner.__dict__[name]
            restore.append((owner, name, original))
            setattr(owner, name, _timed(original, label, totals, depth))
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = autotune_run.main(argv)
    finally:
        for owner, name, original in reversed(restore):
            setattr(owner, name, original)
    if code != 0:
        raise SystemExit(f"error: the timed overhead run exited {code}")
    return {"trials": n_trials,
            "rows": [(label, 1000 * totals[label] / n_trials) for label, _ in TIMED]}


def _timed(function: Any, label: str, totals: dict[str, float], depth: list[int]) -> Any:
    def timed(*a: Any, **kw: Any) -> Any:
        depth[0] += 1
        started = time.perf_counter()
        try:
            return function(*a, **kw)
        finally:
            depth[0] -= 1
            if depth[0] == 0:
                totals[label] += time.perf_counter() - started

    return timed


def print_breakdown(breakdown: dict[str, Any]) -> None:
    print(f"where it goes (wall-clock timers around these calls, in-process, ms per trial of "
          f"{breakdown['trials']}, means: the first trial's one-time warm-up included; "
          f"indented rows are parts of the row above):")
    for label, ms in breakdown["rows"]:
        print(f"  {ms:7.2f} ms  {label}")


def fmt_s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f}s"


def wait_quiet(limit_s: float, below: float = 1.0) -> None:
    """Wait (up to limit_s) until other work leaves the machine: timings need idle cores."""
    deadline = time.monotonic() + limit_s
    while os.getloadavg()[0] >= below and time.monotonic() < deadline:
        time.sleep(5)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
