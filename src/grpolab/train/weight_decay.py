"""Which trainable parameters AdamW decays: not biases and not normalisation weights.

Decay pulls a weight toward 0. For a matrix that is a useful prior; a bias or a norm's gain is a
per-channel offset or scale whose natural value is not 0 (a LayerNorm/RMSNorm weight starts at 1),
so decaying it only distorts the model. The HF Trainer excludes both; we use the same rule, through
transformers' own helper, so a model trained here and with the HF Trainer decays the same tensors.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.trainer_pt_utils import get_parameter_names

# The name patterns of transformers.Trainer.get_decay_parameter_names (bias, and every spelling of norm).
NO_DECAY_PATTERNS = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]


def decay_parameter_names(model: torch.nn.Module) -> set[str]:
    """Names (as in model.named_parameters()) of the parameters weight decay applies to."""
    return set(get_parameter_names(model, [torch.nn.LayerNorm], NO_DECAY_PATTERNS))


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """The trainable parameters as optimizer groups: [decayed ones, the rest with weight_decay 0].

    Example: a Linear(4, 4) and a LayerNorm(4) -> group 0 holds the Linear's weight; group 1 its
    bias and the LayerNorm's weight and bias. Empty groups are left out.
    """
    decayed = decay_parameter_names(model)
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for name, p in trainable if name in decayed], "weight_decay": weight_decay},
        {"params": [p for name, p in trainable if name not in decayed], "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]
