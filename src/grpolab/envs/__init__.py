"""Multi-turn tool-using agents: environments and tools (the rollout loop that drives them is
rollout/multi_turn.py)."""

from grpolab.envs.env import CalculatorEnv, EnvFactory, Environment, PythonEnv, StepResult, ToolEnv, load_env
from grpolab.envs.tools import Tool, ToolError

__all__ = [
    "CalculatorEnv",
    "EnvFactory",
    "Environment",
    "PythonEnv",
    "StepResult",
    "Tool",
    "ToolEnv",
    "ToolError",
    "load_env",
]
