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
exit $status
