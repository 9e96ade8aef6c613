"""Step metrics mean what TRL's of the same name mean."""

import pytest
import torch

from grpolab.algo.advantages import group_advantages
from grpolab.train.step_metrics import reward_statistics


def test_reward_std_is_the_batch_std_and_the_group_std_has_its_own_name():
    rewards = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    # TRL 1.x logs reward_std = rewards.std() over the whole batch (unbiased): mean 0.75, squared
    # deviations 6 * 0.0625 + 2 * 0.5625 = 1.5 -> sqrt(1.5 / 7) = 0.46291.
    stats = reward_statistics(rewards)
    assert stats["reward_std"] == pytest.approx(0.46291, abs=1e-5)
    assert stats["reward"] == pytest.approx(0.75)
    # The mean within-group std: (sqrt(1 / 3) + 0) / 2 = 0.28868.
    _, adv_stats = group_advantages(rewards, "group")
    assert adv_stats.mean_group_std == pytest.approx(0.28868, abs=1e-5)


def test_unscored_rewards_are_left_out_and_one_value_has_no_spread():
    nan = float("nan")
    # scored [2, 0]: mean 1, unbiased std sqrt(2 / 1) = 1.41421
    assert reward_statistics(torch.tensor([[2.0, nan], [nan, 0.0]]))["reward_std"] == pytest.approx(1.41421, abs=1e-5)
    assert reward_statistics(torch.tensor([[3.0, nan]]))["reward_std"] == 0.0
