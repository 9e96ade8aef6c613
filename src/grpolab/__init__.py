"""grpolab: GRPO fine-tuning for language models, single-turn and multi-turn agents."""

__version__ = "0.1.0"
