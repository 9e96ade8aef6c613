"""Multi-turn tool-using agents: environments, tools, and the token-in/token-out rollout loop."""

from grpolab.agent.env import CalculatorEnv, EnvFactory, Environment, PythonEnv, StepResult, ToolEnv, load_env
from grpolab.agent.metrics import agent_metrics
from grpolab.agent.rollout import run_agent_rollouts, trained_spans
from grpolab.agent.tools import Tool, ToolError

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
