#!/usr/bin/env bash
# The checks that need a GPU, in one short call (well under 8 minutes on one H100/H200):
# the CUDA-only tests (they skip elsewhere), then GPU figures: seconds per epoch of the mnist
# study's models on the GPU, and finished trials per hour with 1 and 4 workers sharing it.
#   scripts/gpu_check.sh            # with .venv built (scripts/bootstrap.sh), or PY=python
# Writes nothing outside a temporary folder; prints figures on stdout.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu runs the figures' steps on the CPU: a check of this script
[ "$DEVICE" = cpu ] || "$PY" -c 'import torch, sys; ok = torch.cuda.is_available(); print("device:", torch.cuda.get_device_name() if ok else "none"); sys.exit(0 if ok else 3)' \
  || { echo "gpu_check: no CUDA device; nothing to check" >&2; exit 3; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0

echo "== CUDA-only tests"
[ "$DEVICE" = cpu ] || "$PY" -m pytest -q -rs tests/test_peak_memory.py tests/test_rng.py tests/test_data.py \
  tests/test_train.py -k "cuda or gpu or device or bf16 or channels_last" || status=1

figures() {  # $1 workers, $2 trials
  local url="sqlite:///$work/w$1.db"
  local started=$SECONDS
  timeout 240 "$PY" -m autotune.run --study mnist --device "$DEVICE" --workers "$1" \
    --n-trials "$2" --max-epochs 3 --storage "$url" --artifacts "$work/a$1" \
    >"$work/out$1" 2>"$work/err$1" || { echo "run with $1 worker(s) failed:"; tail -5 "$work/err$1"; return 1; }
  "$PY" - "$url" "$1" "$((SECONDS - started))" <<'PY'
import statistics, sys, optuna
url, workers, wall_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
study = optuna.load_study(study_name="mnist", storage=url)
done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
per_epoch = [t.user_attrs["seconds_per_epoch"] for t in done if t.user_attrs.get("seconds_per_epoch")]
print(f"workers={workers}: {len(done)} trials in {wall_s:.0f} s -> {3600 * len(done) / wall_s:.0f} "
      f"trials/hour; seconds per epoch median {statistics.median(per_epoch):.3f}")
PY
}
echo "== GPU figures (mnist study, 3 epochs a trial)"
figures 1 6 || status=1
figures 4 12 || status=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv

# Ray: K workers on one GPU, each asking for 1/K of it (--gpus-per-trial), on a one-node
# cluster started here and stopped by its process group; GPU utilisation sampled meanwhile.
ray_figures() {  # $1 workers
  local port=$((20000 + RANDOM % 20000)) temp gpus cpus util_pid
  temp=$(mktemp -d /tmp/rgXXXX)
  gpus=$("$PY" -c "print(0 if '$DEVICE' == 'cpu' else 1 / $1)")
  cpus=$("$PY" -c "import os; print(max(0.5, len(os.sched_getaffinity(0)) // $1))")
  RAY_USAGE_STATS_ENABLED=0 setsid "$(dirname "$PY")/ray" start --head --port "$port" \
    --node-ip-address 127.0.0.1 --include-dashboard=false --temp-dir "$temp" --num-gpus 1 \
    --object-store-memory 200000000 --block >"$work/ray$1.log" 2>&1 &
  local ray_pid=$!
  disown "$ray_pid"  # stopped by its process group below, without a shell notice
  sleep 8
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 500 >"$work/util$1" &
    util_pid=$!
  fi
  local started=$SECONDS url="sqlite:///$work/ray$1.db"
  timeout 150 "$PY" -m autotune.run --study mnist --launcher ray --ray-address "127.0.0.1:$port" \
    --workers "$1" --gpus-per-trial "$gpus" --cpus-per-trial "$cpus" --n-trials $((2 * $1 + 4)) \
    --max-epochs 2 --storage "$url" --artifacts "$work/ra$1" >"$work/rout$1" 2>"$work/rerr$1" \
    || { echo "ray run with $1 worker(s) failed:"; tail -5 "$work/rerr$1"; status=1; }
  local wall=$((SECONDS - started))
  [ -n "${util_pid:-}" ] && kill "$util_pid"
  kill -TERM -- -"$ray_pid" 2>/dev/null; sleep 3; kill -KILL -- -"$ray_pid" 2>/dev/null
  "$PY" - "$url" "$1" "$wall" "$gpus" "$work/util$1" <<'PY'
import os, sys, optuna
url, workers, wall_s, gpus, util = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
done = [t for t in optuna.load_study(study_name="mnist", storage=url).trials
        if t.state.name in ("COMPLETE", "PRUNED")]
samples = [float(x) for x in open(util).read().split()] if os.path.exists(util) else []
busy = f"{sum(samples) / len(samples):.0f}%" if samples else "n/a"
print(f"ray workers={workers} gpus_per_trial={gpus}: {len(done)} trials in {wall_s:.0f} s -> "
      f"{3600 * len(done) / max(wall_s, 1):.0f} trials/hour; mean GPU utilisation {busy}")
PY
}
echo "== Ray on one GPU (mnist study, 2 epochs a trial)"
for k in 1 2 4 8; do ray_figures "$k"; done
exit $status
