"""TRL 1.16 `GRPOConfig` keyword names, and where each lands in grpolab's config tree.

One row per TRL argument. `target` is grpolab's dotted key (same meaning and unit unless `convert`
says otherwise); an argument TRL has and grpolab does not carries `target=None` and a one-line `note`
saying so. The README's TRL table is generated from this table (scripts/config_reference.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrlArg:
    target: str | None  # grpolab dotted key; None = not offered by grpolab (see note)
    note: str = ""  # one line for the README table / the "not offered" message
    convert: Callable[[Any], Any] | None = None  # TRL value -> grpolab value, where units differ


def _turns_from_iterations(iterations: Any) -> int:
    """TRL runs the tools, then generates again, up to N times: N + 1 model turns in all."""
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 0:
        raise ValueError(f"max_tool_calling_iterations: expected a whole number >= 0, got {iterations!r}")
    return iterations + 1


# TRL name -> TrlArg. Filled by the TRL-compatibility work (issue 20) and the objectives (issue 21).
TRL_ARGS: dict[str, TrlArg] = {
    # tools (issue 19)
    "max_tool_calling_iterations": TrlArg(
        "agent.max_turns", "N tool rounds after the first turn = N + 1 model turns", _turns_from_iterations
    ),
}
