"""Learning regression: a short GRPO run on the tiny model must raise its reward, train and held-out.

The other tests pin the update's arithmetic; this one fails when the pieces, put together, stop
learning (an advantage with the wrong sign, a loss that no longer reaches the weights, a mask shifted
off the sampled tokens, a ratio that clips everything). Arithmetic correctness needs hundreds of
steps on this model (docs/experiments.md), so the reward is one the tiny model can raise in 10 steps:
the number of "1" characters in the completion (up to 4). Its greedy completions on held-out
questions start at ~0.1 and reach ~1.0.

Margins (stated, checked for both objectives): training reward, mean of the last 3 steps minus the
first 3, >= 0.4 (seen: 0.25 -> 1.0 and 0.31 -> 1.0); held-out greedy reward on the 16 validation
questions, after minus before, >= 0.5 (seen: 0.125 -> 1.0). With the advantage's sign flipped both
fall instead. Fixed seeds, one torch thread (two threads on a loaded 2-core box were 10x slower).
"""

from __future__ import annotations

import statistics

import pytest

from grpolab.api import GRPOTrainer
from grpolab.compat.load import load_config
from run_helpers import read_metrics

pytestmark = pytest.mark.slow

TRAIN_MARGIN = 0.4
HELD_OUT_MARGIN = 0.5


def ones(completions, **kwargs):
    """min(number of "1" characters, 4) / 4 (TRL's reward signature)."""
    texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
    return [min(text.count("1"), 4) / 4 for text in texts]


OBJECTIVES = {
    "dapo (default)": [],
    # two iterations: the second pass is off-policy, where CISPO's clipped weight differs from PPO's
    # clip (on-policy every surrogate has the same gradient)
    "cispo": ["grpo.loss_type=cispo", "grpo.epsilon_high=5", "grpo.num_iterations=2"],
}


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_grpo_raises_the_reward_in_ten_steps(tmp_path, objective):
    cfg = load_config(
        "default",
        [
            f"train.output_dir={tmp_path}", "train.max_steps=10", "train.questions_per_step=8",
            "grpo.num_generations=8", "optim.lr=3e-3", "optim.warmup_ratio=0", "eval.every_steps=0",
            "eval.size=16", "data.val_size=16", "data.test_size=8", "train.torch_threads=1", "train.patience=0",
            "logging.quiet=true", "logging.report=false", "train.seed=42", *OBJECTIVES[objective],
        ],
        env_file=None, environ={},
    )  # fmt: skip
    summary = GRPOTrainer(args=cfg, reward_funcs=[ones]).train()
    rows = read_metrics(summary.run_dir)
    train = [r["reward"] for r in rows if "reward" in r and "loss" in r]
    held_out = [r["eval/rewards/ones/mean"] for r in rows if "eval/rewards/ones/mean" in r]  # before, after
    assert len(train) == 10 and len(held_out) == 2
    gain = statistics.fmean(train[-3:]) - statistics.fmean(train[:3])
    assert gain >= TRAIN_MARGIN, f"{objective}: training reward {train} rose by {gain:.2f} < {TRAIN_MARGIN}"
    assert held_out[1] - held_out[0] >= HELD_OUT_MARGIN, f"{objective}: held-out reward {held_out}"
