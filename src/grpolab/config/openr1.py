"""open-r1's names for its rewards and their parameters, and the one function that rewrites a
`rewards:` entry in them to ours (REWARDS.md has the semantics each name keeps).

Imports nothing from grpolab: the config schema calls `openr1_reward` while it is being built.
"""

from __future__ import annotations

from typing import Any

# open-r1's reward names (its registry keys and its functions' names) -> our built-in of the same
# semantics (REWARDS.md). A reward written this way keeps the written name as its metric label.
OPENR1_REWARDS: dict[str, str] = {
    "accuracy_reward": "accuracy",
    "format_reward": "format",
    "tag_count_reward": "tag_count",
    "reasoning_steps_reward": "reasoning_steps",
    "cosine": "cosine_scaled",
    "cosine_scaled_reward": "cosine_scaled",
    "repetition_penalty_reward": "repetition_penalty",
    "len_reward": "length",
    "soft_overlong_punishment": "soft_overlong",
    "soft_overlong_punishment_reward": "soft_overlong",
}

# open-r1's parameter names (flat script arguments) -> (our reward, its param). Accepted inside a
# reward's entry (`{name: cosine_scaled, cosine_max_len: 500}`) and as top-level keys (`cosine_max_len=500`
# on the command line or in a YAML file), which set the param on every reward of that kind in the config.
OPENR1_PARAMS: dict[str, tuple[str, str]] = {
    "cosine_min_value_wrong": ("cosine_scaled", "min_value_wrong"),
    "cosine_max_value_wrong": ("cosine_scaled", "max_value_wrong"),
    "cosine_min_value_correct": ("cosine_scaled", "min_value_correct"),
    "cosine_max_value_correct": ("cosine_scaled", "max_value_correct"),
    "cosine_max_len": ("cosine_scaled", "max_len"),
    "repetition_n_grams": ("repetition_penalty", "ngram_size"),
    "repetition_max_penalty": ("repetition_penalty", "max_penalty"),
    "max_completion_len": ("soft_overlong", "max_completion_len"),
    "soft_punish_cache": ("soft_overlong", "cache"),
}


def openr1_reward(entry: Any) -> Any:
    """One `rewards:` entry with open-r1's reward and parameter names rewritten to ours.

    >>> openr1_reward("len_reward")
    {'name': 'length', 'alias': 'len_reward'}
    >>> openr1_reward({"name": "cosine", "cosine_max_len": 500})
    {'name': 'cosine_scaled', 'max_len': 500, 'alias': 'cosine'}
    """
    if isinstance(entry, str) and entry in OPENR1_REWARDS:
        return {"name": OPENR1_REWARDS[entry], "alias": entry}
    if not isinstance(entry, dict):
        return entry
    written = entry.get("name")
    name = OPENR1_REWARDS.get(written, written) if isinstance(written, str) else written
    out: dict[str, Any] = {}
    for key, value in entry.items():
        target = OPENR1_PARAMS.get(key)
        if target is not None and target[0] == name:
            out[target[1]] = value
        else:
            out[key] = name if key == "name" else value
    if name != written:
        out.setdefault("alias", written)
    return out
