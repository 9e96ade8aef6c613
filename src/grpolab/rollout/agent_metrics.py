"""Step metrics of agent rollouts, from `Rollout.info` and the masks (names follow DESIGN.md).

- tools/call_frequency      tool calls per trajectory (mean)
- tools/failure_frequency   failed calls / calls (0 when there were none): malformed calls,
                            unknown tools, bad arguments and tool errors all count as failures
- tools/<name>/calls, tools/<name>/failures   per trajectory (mean); `_invalid` collects calls
                            whose tool could not be identified
- turns/mean                model turns per trajectory
- turns/truncated_ratio     trajectories cut before the model finished (any stop_reason but "done")
- tokens/masked_fraction    completion tokens with mask 0 (tool output, glue) / all completion tokens

>>> from grpolab.rollout.types import Rollout
>>> r = Rollout(0, [1], [5, 6, 7], [1, 0, 1], "", False, info={"turns": 2, "tool_calls": 1,
...     "tool_failures": 0, "per_tool": {"calculator": {"calls": 1, "failures": 0}}})
>>> agent_metrics([r])["tokens/masked_fraction"]
0.3333333333333333
"""

from __future__ import annotations

from collections.abc import Sequence

from grpolab.rollout.types import Rollout


def agent_metrics(rollouts: Sequence[Rollout]) -> dict[str, float]:
    if not rollouts:
        return {}
    n = len(rollouts)
    calls = sum(r.info.get("tool_calls", 0) for r in rollouts)
    failures = sum(r.info.get("tool_failures", 0) for r in rollouts)
    tokens = sum(len(r.completion_mask) for r in rollouts)
    masked = sum(len(r.completion_mask) - sum(r.completion_mask) for r in rollouts)
    metrics = {
        "tools/call_frequency": calls / n,
        "tools/failure_frequency": failures / calls if calls else 0.0,
        "turns/mean": sum(r.info.get("turns", 0) for r in rollouts) / n,
        "turns/truncated_ratio": sum(r.truncated for r in rollouts) / n,
        "tokens/masked_fraction": masked / tokens if tokens else 0.0,
    }
    names = sorted({name for r in rollouts for name in r.info.get("per_tool", {})})
    for name in names:
        for key in ("calls", "failures"):
            total = sum(r.info.get("per_tool", {}).get(name, {}).get(key, 0) for r in rollouts)
            metrics[f"tools/{name}/{key}"] = total / n
    return metrics
