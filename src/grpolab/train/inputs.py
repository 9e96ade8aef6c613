"""What a run is given (datasets split into questions, reward sets, an optional loaded model, LoRA
config and environment), and how its random streams start. The Python API builds these; the trainer
only consumes them."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from grpolab.data.base import Splits
from grpolab.envs.env import EnvFactory
from grpolab.rewards import RewardSet


@dataclass
class RunInputs:
    """What a run trains and is scored on, built by the Python API from datasets, rewards and a model."""

    splits: Splits
    rewards: RewardSet
    eval_rewards: RewardSet  # the training rewards plus what evaluation reads (weight 0)
    model: Any | None = None  # a transformers model the caller loaded; None = load cfg.model.name
    tokenizer: Any | None = None  # its tokenizer (with `model`)
    lora: Any | None = None  # a peft LoraConfig; None = built from model.lora_* when finetune=lora
    env_factory: EnvFactory | None = None  # agents: one environment per episode; None = cfg.agent.env
    adapter: str | None = None  # a trained LoRA adapter directory put on the loaded model (`grpolab eval`)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
