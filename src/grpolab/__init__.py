"""grpolab: GRPO fine-tuning for language models, single-turn and multi-turn agents.

from grpolab import GRPOConfig, GRPOTrainer    # the Python API (grpolab/api.py)
"""

from typing import Any

from grpolab.version import __version__ as __version__  # re-exported: grpolab.__version__

__all__ = ["GRPOConfig", "GRPOTrainer", "RunSummary", "run_training"]


def __getattr__(name: str) -> Any:
    # Lazy: `grpolab --help` and config errors must not wait for torch and transformers to import.
    if name in __all__:
        from grpolab import api

        return getattr(api, name)
    raise AttributeError(f"module 'grpolab' has no attribute {name!r}")


def __dir__() -> list[str]:
    # the lazy exports too, so a notebook's tab completion offers GRPOTrainer and GRPOConfig
    return sorted({*globals(), *__all__})
