import math

import pytest
import torch

from grpolab.algo.advantages import group_advantages


def test_group_scale_matches_hand_computation():
    # mean 0.5; unbiased std sqrt((4 * 0.25) / 3) = 0.57735 -> +-0.5 / (0.57735 + 1e-4) = +-0.86588
    adv, stats = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0]]), "group")
    assert torch.allclose(adv, torch.tensor([[0.86588, -0.86588, -0.86588, 0.86588]]), atol=1e-5)
    assert stats.frac_reward_zero_std == 0.0
    assert math.isclose(stats.mean_group_std, 0.57735, rel_tol=1e-4)


def test_near_tie_gets_small_advantages_not_full_size_ones():
    # A continuous shaping reward with a near-tie: mean 1.0000025, unbiased std
    # sqrt((3 * 2.5e-6^2 + 7.5e-6^2) / 3) = 5e-6. Divided by the bare std this would be
    # [-0.5, 1.5, -0.5, -0.5] out of float noise; with TRL's std + 1e-4:
    # -2.5e-6 / 1.05e-4 = -0.0238 and 7.5e-6 / 1.05e-4 = 0.0714.
    adv, stats = group_advantages(torch.tensor([[1.0, 1.00001, 1.0, 1.0]]), "group")
    assert adv[0].tolist() == pytest.approx([-0.0238, 0.0714, -0.0238, -0.0238], abs=5e-4)
    assert stats.frac_reward_zero_std == 0.0  # a real (tiny) spread, not an all-equal group


def test_all_equal_group_gives_exact_zero_and_is_counted():
    adv, stats = group_advantages(torch.tensor([[2.0, 2.0, 2.0], [0.0, 3.0, 0.0]]), "group")
    assert torch.equal(adv[0], torch.zeros(3))
    assert not torch.isnan(adv).any()
    assert stats.frac_reward_zero_std == 0.5
    # second group: mean 1, std sqrt((1 + 4 + 1) / 2) = sqrt(3) = 1.73205 -> [-1, 2, -1] / 1.73215
    assert torch.allclose(adv[1], torch.tensor([-0.57732, 1.15464, -0.57732]), atol=1e-4)
    # the mean of the group stds: (0 + 1.73205) / 2
    assert math.isclose(stats.mean_group_std, 0.86603, rel_tol=1e-4)


def test_float_noise_in_an_all_equal_group_is_not_amplified():
    # 0.1 + 0.2 != 0.3 in floats: the group's values differ by one ulp, its std is ~1e-8 (<= 1e-6),
    # so it counts as all-equal and gets exact zeros instead of noise / 1e-4.
    rewards = torch.tensor([[0.1 + 0.2, 0.3, 0.3]], dtype=torch.float64)
    adv, stats = group_advantages(rewards, "group")
    assert torch.equal(adv, torch.zeros(1, 3, dtype=torch.float64))
    assert stats.frac_reward_zero_std == 1.0


def test_batch_and_none_scales():
    rewards = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    # none: centred only -> [[-1, 1], [0, 0]]
    adv, _ = group_advantages(rewards, "none")
    assert torch.equal(adv, torch.tensor([[-1.0, 1.0], [0.0, 0.0]]))
    # batch: std of [0, 2, 1, 1] (unbiased) = sqrt(2/3) = 0.81650 -> 1 / 0.81660 = 1.22459
    adv, _ = group_advantages(rewards, "batch")
    assert torch.allclose(adv, torch.tensor([[-1.22459, 1.22459], [0.0, 0.0]]), atol=1e-4)


def test_unscored_samples_get_zero_and_do_not_poison_the_group():
    nan = float("nan")
    adv, stats = group_advantages(torch.tensor([[1.0, nan, 0.0], [nan, nan, nan]]), "group")
    assert not torch.isnan(adv).any()
    assert adv[0, 1] == 0.0 and torch.equal(adv[1], torch.zeros(3))
    # scored pair [1, 0]: mean 0.5, std sqrt(0.5) = 0.70711 -> +-0.5 / 0.70721 = +-0.70701
    assert torch.allclose(adv[0, [0, 2]], torch.tensor([0.70701, -0.70701]), atol=1e-4)
    assert stats.frac_reward_zero_std == 0.5  # the all-unscored group has no spread


def test_decoupled_advantages_normalise_each_reward_then_the_sum():
    from grpolab.algo.advantages import decoupled_advantages

    # correctness [1, 0] (w 1), format [0, 1] (w 0.5): each group-normalised to +-0.5 / (0.7071 + 1e-4)
    # = +-0.70701; s = [0.70701 - 0.35351, -0.70701 + 0.35351] = [0.35351, -0.35351]; batch std 0.49993
    # -> 0.35351 / (0.49993 + 1e-4) = 0.70696
    rewards = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    adv, _ = decoupled_advantages(rewards, torch.tensor([1.0, 0.5]))
    assert adv[0].tolist() == pytest.approx([0.70696, -0.70696], abs=1e-4)
    # summing first (sum_then_normalize) would give [1, 0.5] -> +-0.7070 too, but with a third
    # completion the decoupled version differs: correctness [1, 0, 0], format [0, 1, 1]
    rewards = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])
    adv, _ = decoupled_advantages(rewards, torch.tensor([1.0, 0.5]))
    # z_corr = [2/3, -1/3, -1/3] / 0.57735 = [1.1545, -0.5773, -0.5773]; z_fmt = -z_corr
    # s = 0.5 * z_corr = [0.5773, -0.2887, -0.2887]; batch std 0.5 -> [1.1545, -0.5773, -0.5773]
    assert adv[0].tolist() == pytest.approx([1.1545, -0.5773, -0.5773], abs=2e-3)


def test_decoupled_advantages_zero_for_flat_groups_and_unscored_completions():
    from grpolab.algo.advantages import decoupled_advantages

    nan = float("nan")
    rewards = torch.tensor(
        [
            [[1.0, 0.2], [1.0, 0.2], [1.0, 0.2]],  # every function flat: exactly 0
            [[1.0, 0.2], [0.0, 0.0], [nan, nan]],  # the third completion was not scored by any function
        ]
    )
    adv, stats = decoupled_advantages(rewards, torch.tensor([1.0, 1.0]))
    assert torch.equal(adv[0], torch.zeros(3))
    assert adv[1, 2].item() == 0.0 and adv[1, 0] > 0 > adv[1, 1]
    assert stats.frac_reward_zero_std == 0.5
    with pytest.raises(ValueError, match="K = 3"):
        decoupled_advantages(rewards, torch.ones(3))
