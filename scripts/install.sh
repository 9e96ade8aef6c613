#!/usr/bin/env bash
# Installs grpolab and its test tools into the given virtual environment, at the exact versions CI
# tests with (constraints.txt; pyproject.toml itself states ranges, for users' environments).
# torch: keep whatever torch the environment already has (a user's CUDA build, say); only when there
# is none, install the CPU build of torch 2.13.0. A plain `torch==2.13.0` from PyPI is the multi-GB CUDA
# build on Linux, so the CPU wheel comes from the PyTorch CPU index (TORCH_INDEX_URL to change it),
# unless a `torch==2.13.0+cpu` wheel is already reachable (a local wheel directory or mirror).
set -euo pipefail
venv=${1:-.venv}
py="$venv/bin/python"
[ -x "$py" ] || python3 -m venv "$venv"
if ! "$py" -c "import torch" 2>/dev/null; then
  "$py" -m pip install -q "torch==2.13.0+cpu" 2>/dev/null \
    || "$py" -m pip install -q "torch==2.13.0" --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
fi
"$py" -m pip install -q -e ".[dev]" -c constraints.txt
