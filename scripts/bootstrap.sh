#!/usr/bin/env bash
# Create or refresh .venv with everything autotune needs. Fast no-op when already current.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
stamp=$venv/.bootstrapped
if [[ -x $venv/bin/python && $stamp -nt pyproject.toml && $stamp -nt constraints.txt ]]; then
  exit 0
fi

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "bootstrap: autotune needs Python >= 3.11; set PYTHON=/path/to/python3.11" >&2; exit 2; }

echo "bootstrap: building $venv (torch alone takes about 90 s)" >&2
"$python" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
# torch and torchvision must come as a matching pair; these builds import together.
case "$(uname -m)" in
  aarch64|arm64) torch_pair=(torch==2.9.1 torchvision==0.24.1) ;;
  *)             torch_pair=(torch==2.14.1 torchvision==0.29.1) ;;
esac
"$venv/bin/pip" install -q "${torch_pair[@]}"
"$venv/bin/pip" install -q -c constraints.txt -e '.[dev,fast]'
# numba compiles the CNN blocks' loops once per machine (~25 s), cached beside the source;
# where it cannot, training runs them on PyTorch ops (slower, same results)
"$venv/bin/python" -m autotune.fast._cnn_kernels >&2 \
  || echo "bootstrap: numba could not compile the CNN loops; CNNs train on PyTorch ops" >&2
touch "$stamp"
echo "bootstrap: ready ($("$venv/bin/python" -c 'import torch, optuna; print("torch", torch.__version__, "optuna", optuna.__version__)'))" >&2
