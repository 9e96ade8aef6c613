import math

import torch

from grpolab.algo.advantages import group_advantages


def test_group_scale_matches_hand_computation():
    # mean 0.5; unbiased std sqrt((4 * 0.25) / 3) = 0.57735 -> +-0.5 / 0.57735 = +-0.86603
    adv, stats = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0]]), "group")
    assert torch.allclose(adv, torch.tensor([[0.86603, -0.86603, -0.86603, 0.86603]]), atol=1e-5)
    assert stats.frac_reward_zero_std == 0.0
    assert math.isclose(stats.reward_std, 0.57735, rel_tol=1e-4)


def test_all_equal_group_gives_exact_zero_and_is_counted():
    adv, stats = group_advantages(torch.tensor([[2.0, 2.0, 2.0], [0.0, 3.0, 0.0]]), "group")
    assert torch.equal(adv[0], torch.zeros(3))
    assert not torch.isnan(adv).any()
    assert stats.frac_reward_zero_std == 0.5
    # second group: mean 1, std sqrt((1 + 4 + 1) / 2) = sqrt(3) -> [-1, 2, -1] / 1.732
    assert torch.allclose(adv[1], torch.tensor([-0.57735, 1.1547, -0.57735]), atol=1e-4)


def test_batch_and_none_scales():
    rewards = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    # none: centred only -> [[-1, 1], [0, 0]]
    adv, _ = group_advantages(rewards, "none")
    assert torch.equal(adv, torch.tensor([[-1.0, 1.0], [0.0, 0.0]]))
    # batch: std of [0, 2, 1, 1] (unbiased) = sqrt(2/3) = 0.8165 -> [[-1.2247, 1.2247], [0, 0]]
    adv, _ = group_advantages(rewards, "batch")
    assert torch.allclose(adv, torch.tensor([[-1.22474, 1.22474], [0.0, 0.0]]), atol=1e-4)


def test_unscored_samples_get_zero_and_do_not_poison_the_group():
    nan = float("nan")
    adv, stats = group_advantages(torch.tensor([[1.0, nan, 0.0], [nan, nan, nan]]), "group")
    assert not torch.isnan(adv).any()
    assert adv[0, 1] == 0.0 and torch.equal(adv[1], torch.zeros(3))
    # scored pair [1, 0]: mean 0.5, std sqrt(0.5) = 0.7071 -> +-0.7071
    assert torch.allclose(adv[0, [0, 2]], torch.tensor([0.70711, -0.70711]), atol=1e-4)
    assert stats.frac_reward_zero_std == 0.5  # the all-unscored group has no spread
