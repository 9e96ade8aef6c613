"""`grpolab train`'s flags besides `--config` and `key=value`: the canonical script's and the research
journal's (their meaning and translation: compat/script_flags.py), and `--resume` that takes a
checkpoint path only when one follows (`--resume train.max_steps=200` resumes the latest checkpoint
and keeps the override).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from grpolab.compat.script_flags import SCRIPT_FLAGS, TEXT_FLAGS, flag_dest, is_config_path


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    script = parser.add_argument_group("canonical arithmetic script flags (same meaning)")
    for flag, (key, text) in SCRIPT_FLAGS.items():
        choices = ["arithmetic", "mixed", "small_numbers"] if flag == "--dataset_type" else None
        script.add_argument(flag, dest=flag_dest(flag), choices=choices, help=f"{text} ({key})")
    script.add_argument(
        "--batch_size", type=int, help="completions per step; must be divisible by the generations (questions x G)"
    )
    journal = parser.add_argument_group("research journal")
    for flag, (key, text) in TEXT_FLAGS.items():
        journal.add_argument(flag, dest=flag_dest(flag), help=f"{text} ({key})")
    journal.add_argument("--tags", nargs="+", help="tags (journal.tags; W&B tags)")


def split_resume(resume: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """`--resume key=value` is `--resume` followed by an override, not a checkpoint named `key=value`."""
    if resume is None or resume == "auto" or Path(resume).exists():
        return resume, overrides
    if "=" in resume or is_config_path(resume):
        return "auto", [resume, *overrides]
    return resume, overrides
