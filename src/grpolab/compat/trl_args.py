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


# TRL name -> TrlArg. Filled by the TRL-compatibility work (issue 20) and the objectives (issue 21).
TRL_ARGS: dict[str, TrlArg] = {}
