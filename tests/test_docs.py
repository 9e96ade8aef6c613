"""The README is the user's door: its config table must match the config tree."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_config_table_is_current():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "config_reference.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_readme_presets_table_is_generated_from_the_presets():
    """The presets table comes from configs/*.yaml (it once said 0..99 / 128 tokens / 20 steps for
    smollm2_cpu while the preset said 0..20 / 96 / 25); config_reference.py --check above keeps it current."""
    from grpolab.compat.load import load_config

    cfg = load_config("smollm2_cpu", [], env_file=None, environ={})
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- PRESETS:START", 1)[1].split("<!-- PRESETS:END -->", 1)[0]
    row = next(line for line in block.splitlines() if line.startswith("| `smollm2_cpu`"))
    assert f"{cfg.data.min_num}..{cfg.data.max_num}" in row and f"| {cfg.generation.max_new_tokens} |" in row


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = ci.strip().splitlines()[-1]
    assert command.startswith("make test") and f"CI runs exactly `{command}`" in readme
