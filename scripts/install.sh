#!/usr/bin/env bash
# Installs grpolab and its test tools into the given virtual environment.
# torch: keep whatever torch the environment already has (a user's CUDA build, say); only when
# there is none, install the pinned CPU build, since an unpinned `torch` pulls a multi-GB CUDA wheel.
set -euo pipefail
venv=${1:-.venv}
py="$venv/bin/python"
[ -x "$py" ] || python3 -m venv "$venv"
if ! "$py" -c "import torch" 2>/dev/null; then
  "$py" -m pip install -q "torch==2.13.0"
fi
"$py" -m pip install -q -e ".[dev]"
