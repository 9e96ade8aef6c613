"""Entropy quantile mask, entropy bonus and the adaptive coefficient (algo.entropy), by hand."""

import math

import pytest
import torch

from grpolab.algo.entropy import EntropyControl, entropy_bonus, entropy_threshold, high_entropy_mask


def test_quantile_threshold_interpolates_and_keeps_the_top_share():
    # 0.6 quantile of [1..5]: position 0.6 * 4 = 2.4 -> 3 + 0.4 * (4 - 3) = 3.4 -> keeps 4 and 5
    entropies = torch.tensor([1.0, 2, 3, 4, 5])
    threshold = entropy_threshold(entropies, keep_quantile=0.4)
    assert threshold == pytest.approx(3.4)
    keep = high_entropy_mask(entropies[None], torch.ones(1, 5), threshold)
    assert keep.tolist() == [[0.0, 0, 0, 1, 1]]
    assert entropy_threshold(entropies, 1.0) == 1.0  # rho 1: the minimum, every token kept
    assert entropy_threshold(entropies, 0.0) == 5.0  # rho 0: only the highest


def test_ties_at_the_threshold_are_all_kept():
    # every entropy 2.0: any quantile is 2.0 and ">=" keeps them all, even at rho 0.2
    entropies = torch.full((2, 3), 2.0)
    threshold = entropy_threshold(entropies.flatten(), 0.2)
    assert threshold == 2.0
    assert high_entropy_mask(entropies, torch.ones(2, 3), threshold).sum().item() == 6
    # [1, 3, 3, 3]: 0.8 quantile at position 2.4 -> 3; the three 3s are kept, not 0.2 x 4 = 0.8 tokens
    tied = torch.tensor([1.0, 3.0, 3.0, 3.0])
    assert high_entropy_mask(tied[None], torch.ones(1, 4), entropy_threshold(tied, 0.2)).tolist() == [[0, 1, 1, 1]]


def test_masked_tokens_are_never_kept_and_a_fully_masked_row_keeps_nothing():
    entropy = torch.tensor([[9.0, 1.0], [7.0, 8.0]])
    mask = torch.tensor([[0.0, 1.0], [0.0, 0.0]])  # row 1 has no trained token
    threshold = entropy_threshold(entropy[mask > 0], 0.5)  # only the 1.0 counts
    assert threshold == 1.0
    assert high_entropy_mask(entropy, mask, threshold).tolist() == [[0.0, 1.0], [0.0, 0.0]]
    assert entropy_threshold(torch.zeros(0), 0.5) == math.inf  # no trained tokens anywhere


def test_entropy_bonus_is_minus_coef_times_the_step_mean_and_has_a_gradient():
    entropy = torch.tensor([[1.0, 3.0, 5.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    share = entropy_bonus(entropy, mask, coef=0.1, step_tokens=4.0)  # this micro-batch: 2 of the step's 4 tokens
    assert share.item() == pytest.approx(-0.1 * (1 + 3) / 4)
    share.backward()
    assert entropy.grad.flatten().tolist() == pytest.approx([-0.1 / 4, -0.1 / 4, 0.0])


def test_adaptive_coefficient_moves_toward_the_target_and_gates_the_bonus():
    control = EntropyControl(coef=0.01)
    assert control.applied(adaptive=False, target=0.2) == 0.01
    assert control.applied(adaptive=True, target=0.2) == 0.0  # no step measured yet (inf > target)
    low = control.after_step(0.1, target=0.2, delta=0.005, low=0.0, high=1.0)  # H 0.1 <= 0.2: up
    assert low.coef == pytest.approx(0.015) and low.last_entropy == 0.1
    assert low.applied(adaptive=True, target=0.2) == pytest.approx(0.015)
    high = low.after_step(0.3, target=0.2, delta=0.005, low=0.0, high=1.0)  # H 0.3 > 0.2: down, and off
    assert high.coef == pytest.approx(0.01) and high.applied(adaptive=True, target=0.2) == 0.0
    assert EntropyControl(0.002).after_step(0.5, target=0.2, delta=0.005, low=0.0, high=1.0).coef == 0.0  # clamped
    assert EntropyControl(0.998).after_step(0.0, target=0.2, delta=0.005, low=0.0, high=1.0).coef == 1.0


def test_the_adaptive_coefficient_is_saved_with_the_run_state():
    import json

    from grpolab.data.order import QuestionOrder
    from grpolab.eval.early_stopping import EarlyStopping
    from grpolab.train.state import RunState

    def fresh() -> RunState:
        return RunState(QuestionOrder(10, 2, seed=1), EarlyStopping("eval/accuracy", patience=2))

    state = fresh()
    state.entropy_control = EntropyControl(coef=0.015, last_entropy=0.1)
    restored = fresh()
    restored.load_state_dict(json.loads(json.dumps(state.state_dict())))  # trainer_state.json is JSON
    assert restored.entropy_control == EntropyControl(coef=0.015, last_entropy=0.1)
    before_any_step = fresh()  # no bonus, or a checkpoint from before the key existed: None
    before_any_step.load_state_dict({k: v for k, v in fresh().state_dict().items() if k != "entropy_control"})
    assert before_any_step.entropy_control is None
