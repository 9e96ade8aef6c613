"""Multi-turn tool-using agents: environments, tools, and the token-in/token-out rollout loop."""

from grpolab.envs.env import CalculatorEnv, EnvFactory, Environment, PythonEnv, StepResult, ToolEnv, load_env
from grpolab.envs.tools import Tool, ToolError
from grpolab.rollout.agent_metrics import agent_metrics
from grpolab.rollout.multi_turn import run_agent_rollouts, trained_spans

__all__ = [
    "CalculatorEnv",
    "EnvFactory",
    "Environment",
    "PythonEnv",
    "StepResult",
    "Tool",
    "ToolEnv",
    "ToolError",
    "agent_metrics",
    "load_env",
    "run_agent_rollouts",
    "trained_spans",
]
