"""Environments for end-to-end tests, importable as `scripted_envs:Class` from agent.env."""

from __future__ import annotations

from grpolab.envs.env import CalculatorEnv, StepResult


class ToolUseJudgedEnv(CalculatorEnv):
    """The calculator, whose final_reward() is 1.0 when the episode called the tool at least once,
    0.0 when it answered without, and None when the episode never reached the environment."""

    def __init__(self, **params: object) -> None:
        super().__init__(**params)  # type: ignore[arg-type]
        self.calls: int | None = None

    def step(self, assistant_message: str) -> StepResult:
        result = super().step(assistant_message)
        self.calls = (self.calls or 0) + int(result.info.get("tool_calls", 0))
        return result

    def final_reward(self) -> float | None:
        return None if self.calls is None else float(self.calls > 0)
