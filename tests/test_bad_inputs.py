"""Bad input gives one clear `error:` line, a non-zero exit code and no traceback (issue 14): the
audit's table of malformed inputs (tests/bad_inputs.py), one subprocess each."""

from __future__ import annotations

import pytest
import torch

from bad_inputs import CASES, BadInput, run_case


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_clear_error_line(case: BadInput, tmp_path):
    if case.needs_no_gpu and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    outcome = run_case(case, tmp_path)
    assert outcome.problem is None, f"{outcome.problem}:\n{outcome.stderr[-3000:]}"
    assert case.expect in outcome.stderr, outcome.stderr
