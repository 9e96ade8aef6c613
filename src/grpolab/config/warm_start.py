"""The `warm_start:` section: supervised steps on gold tool-use traces before GRPO (train/warm_start.py).

Config (config/schema.py) holds it as `warm_start`; `check_warm_start` is its cross-section check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from grpolab.config.schema import Config


# The built-in gold-turns functions (envs/gold_turns.py BUILTIN_GOLD_TURNS holds them; a test keeps the two equal).
GOLD_TURNS = ("calculator",)


class WarmStartConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)

    sft_steps: int = Field(0, ge=0, description="supervised steps on gold agent traces before GRPO; 0 = none")
    sft_lr: float = Field(1.0e-3, gt=0.0, description="warm start: AdamW learning rate (constant)")
    traces_per_step: int = Field(4, gt=0, description="warm start: traces per step")
    questions: int = Field(64, gt=0, description="warm start: training questions played as gold traces")
    gold_turns: str = Field("calculator", description="gold assistant turns of a row: built-in name or 'pkg.module:fn'")

    @field_validator("gold_turns")
    @classmethod
    def _known_turns(cls, value: str) -> str:
        if ":" not in value and value not in GOLD_TURNS:
            known = ", ".join(GOLD_TURNS)
            raise ValueError(f"unknown gold turns {value!r}; built-ins: {known}, or 'pkg.module:function'")
        return value


def check_warm_start(cfg: Config) -> None:
    """A warm start plays agent episodes: it needs the agent loop."""
    if cfg.warm_start.sft_steps and not cfg.agent.enabled:
        raise ValueError("warm_start.sft_steps > 0 trains on agent episodes: set agent.enabled=true, or sft_steps=0")
