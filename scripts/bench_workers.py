"""Parallel search throughput: the same study with 1, 2, 4 (8) workers on SQLite and PostgreSQL.

Prints trials per minute, the ratio to 1 worker on the same storage, the share of worker wall
time spent inside storage calls, and any "database is locked" errors or failed trials.

    python scripts/bench_workers.py                      # 1, 2, 4 workers; sqlite + postgresql
    python scripts/bench_workers.py --workers 1,8 --storages sqlite --n-trials 40
    python scripts/bench_workers.py --study mnist --max-epochs 3 --n-trials 12 --workers 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parent.parent
STUDY = """
dataset = "digits"
model = "mlp"
seed = 0
[budget]
max_epochs = 10
[sampler]
name = "tpe"
n_startup_trials = 5
[pruner]
name = "median"
n_startup_trials = 3
n_warmup_steps = 1
[space]
lr = { low = 1e-4, high = 0.3, log = true }
optimizer = { choices = ["sgd", "adam", "rmsprop"] }
momentum = { low = 0.0, high = 0.9 }
batch_size = { choices = [32, 64, 128] }
width = { low = 32, high = 256, log = true }
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4", help="comma-separated (default: 1,2,4)")
    parser.add_argument("--storages", default="sqlite,postgresql")
    parser.add_argument("--n-trials", type=int, default=24)
    parser.add_argument("--study", help="a study name or file instead of the built-in digits "
                                        "study, e.g. mnist")
    parser.add_argument("--max-epochs", type=int, help="override the study's max_epochs")
    parser.add_argument("--pg-url", default=os.environ.get(
        "AUTOTUNE_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args(argv)
    counts = [int(k) for k in args.workers.split(",")]
    print(f"{'storage':<11} {'workers':>7} {'wall s':>7} {'trials/min':>10} {'vs 1':>6} "
          f"{'storage %':>9} {'failed':>6} {'locked':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        study_file = Path(tmp) / "bench.toml"
        study_file.write_text(STUDY)
        study = args.study or str(study_file)
        extra = ["--max-epochs", str(args.max_epochs)] if args.max_epochs else []
        for kind in args.storages.split(","):
            base_rate = None
            for k in counts:
                row = run_once(kind, k, args.n_trials, study, extra, Path(tmp), args.pg_url)
                base_rate = base_rate or row["rate"]
                print(f"{kind:<11} {k:>7} {row['wall_s']:>7.1f} {row['rate']:>10.1f} "
                      f"{row['rate'] / base_rate:>5.2f}x {row['storage_pct']:>8.1f}% "
                      f"{row['failed']:>6} {row['locked']:>6}", flush=True)
    return 0


def run_once(kind: str, n_workers: int, n_trials: int, study: str, extra: list[str],
             tmp: Path, pg_url: str) -> dict[str, float]:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    url = f"sqlite:///{tmp / (name + '.db')}" if kind == "sqlite" else pg_url
    timing = tmp / f"{name}.timing"
    env = {**os.environ, "AUTOTUNE_STORAGE_TIMING": str(timing)}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "autotune.run", "--study", study, "--study-name", name,
         "--storage", url, "--n-trials", str(n_trials), "--workers", str(n_workers),
         "--artifacts", str(tmp / "artifacts"), *extra],
        cwd=REPO, capture_output=True, text=True, env=env)
    wall_s = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"run failed ({kind}, {n_workers} workers):\n{result.stderr[-2000:]}")
    # the parent's own storage calls count too; its wall time covers the workers' lifetime
    rows = [json.loads(line) for line in timing.read_text().splitlines()]
    workers = [r for r in rows if r["pid"] != rows[-1]["pid"]] or rows
    storage_s = sum(r["storage_s"] for r in workers)
    study = optuna.load_study(study_name=name, storage=url)
    failed = sum(t.state.name == "FAIL" and not str(
        t.user_attrs.get("fail_reason", "")).startswith("surplus") for t in study.trials)
    if kind != "sqlite":
        optuna.delete_study(study_name=name, storage=url)
    return {"wall_s": wall_s, "rate": n_trials / wall_s * 60,
            "storage_pct": 100 * storage_s / sum(r["wall_s"] for r in workers),
            "failed": failed, "locked": result.stderr.count("database is locked")}


if __name__ == "__main__":
    sys.exit(main())
