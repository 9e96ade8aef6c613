"""Truncated importance sampling (algo.importance) and its use in the loss, with hand-computed values."""

import math

import pytest
import torch

from grpolab.algo.importance import logprob_mismatch, truncated_is_weights
from grpolab.algo.loss import StepTotals, grpo_loss


def test_weights_are_the_ratio_cut_at_the_cap_and_one_off_the_mask():
    sample = torch.tensor([[-1.0, -2.0, -3.0, -0.5]])
    # old - sample = [0, ln 1.5, ln 4, 7]; the last token is not trained (mask 0)
    old = sample + torch.tensor([[0.0, math.log(1.5), math.log(4.0), 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = truncated_is_weights(old, sample, mask, cap=2.0)
    # exp(0) = 1; exp(ln 1.5) = 1.5; exp(ln 4) = 4 -> cut to 2; masked -> 1
    assert torch.allclose(w, torch.tensor([[1.0, 1.5, 2.0, 1.0]]))


def test_weights_below_one_are_kept():
    # the engine liked the token more than the trainer does: ratio e^-1 = 0.368, no lower cut
    w = truncated_is_weights(torch.tensor([[-2.0]]), torch.tensor([[-1.0]]), torch.ones(1, 1), cap=2.0)
    assert w.item() == pytest.approx(math.exp(-1))


def test_bad_cap_is_refused():
    with pytest.raises(ValueError, match="cap"):
        truncated_is_weights(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), cap=0.0)


def test_mismatch_mean_max_and_truncated_share():
    sample = torch.zeros(1, 4)
    old = torch.tensor([[0.1, -0.3, math.log(4.0), 9.0]])  # last token masked: ignored
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    m = logprob_mismatch(old, sample, mask, cap=2.0)
    assert m["mismatch/logp_abs_mean"] == pytest.approx((0.1 + 0.3 + math.log(4.0)) / 3)
    assert m["mismatch/logp_abs_max"] == pytest.approx(math.log(4.0))
    assert m["mismatch/is_truncated_frac"] == pytest.approx(1 / 3)  # only ratio 4 exceeds cap 2


def test_mismatch_of_an_empty_mask_is_zero():
    m = logprob_mismatch(torch.ones(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), cap=2.0)
    assert m == {"mismatch/logp_abs_mean": 0.0, "mismatch/logp_abs_max": 0.0, "mismatch/is_truncated_frac": 0.0}


def test_token_weights_scale_the_policy_loss_not_the_kl():
    # on-policy (ratio 1), adv +1, one sequence of 2 trained tokens, dapo normaliser (sum / 2 tokens)
    logp = torch.tensor([[-1.0, -1.0]])
    ref = torch.tensor([[-2.0, -2.0]])  # delta = -1: k3 = e^-1 + 1 - 1 = 0.368 per token
    totals = StepTotals(num_sequences=1, num_tokens=2.0, max_completion_length=2)
    kwargs = dict(epsilon=0.2, epsilon_high=None, beta=0.1, loss_type="dapo", totals=totals)
    mask = torch.ones(1, 2)
    weights = torch.tensor([[2.0, 0.5]])
    _, plain = grpo_loss(logp, logp, ref, torch.tensor([1.0]), mask, **kwargs)
    _, weighted = grpo_loss(logp, logp, ref, torch.tensor([1.0]), mask, token_weights=weights, **kwargs)
    # policy loss per token is -1: plain (-1 - 1) / 2 = -1; weighted (-2 - 0.5) / 2 = -1.25
    assert plain["loss/policy"] == pytest.approx(-1.0)
    assert weighted["loss/policy"] == pytest.approx(-1.25)
    assert weighted["loss/kl"] == pytest.approx(plain["loss/kl"]) == pytest.approx(0.1 * math.exp(-1))


def test_collate_keeps_sampler_logprobs_only_where_the_model_sampled():
    from grpolab.rollout.types import Rollout, collate

    single = Rollout(0, [5, 6], [7, 8], [1, 1], "", False, sample_logprobs=[-0.1, -0.2])
    # full agent mode: tool tokens (positions 1-2) are trained but were not sampled: filler 0 in the rollout
    agent = Rollout(
        0, [5], [7, 9, 9, 8], [1, 1, 1, 1], "", False, sample_logprobs=[-0.3, 0.0, 0.0, -0.4],
        info={"sampled_spans": [[0, 1], [3, 4]]},
    )  # fmt: skip
    batch = collate([single, agent], pad_id=0)
    nan = float("nan")
    expected = torch.tensor([[-0.1, -0.2, nan, nan], [-0.3, nan, nan, -0.4]])
    assert torch.allclose(batch.sample_logp, expected, equal_nan=True)
    assert collate([single, Rollout(0, [5], [7], [1], "", False)], 0).sample_logp is None  # one kept none


@pytest.mark.parametrize(
    "mode, expected",
    [
        # log-ratios [ln 4, ln 0.25] on one row, bounds [0.5, 2]
        ("token_truncate", [2.0, 0.5]),  # 4 -> 2, 0.25 -> 0.5
        ("token_mask", [0.0, 0.0]),  # both outside [0.5, 2]: dropped
        ("sequence_truncate", [1.0, 1.0]),  # exp(ln 4 + ln 0.25) = 1, inside
        ("sequence_mask", [1.0, 1.0]),
    ],
)
def test_sampler_is_modes_by_hand(mode, expected):
    from grpolab.algo.importance import sampler_is_weights

    old = torch.tensor([[math.log(4.0), math.log(0.25), 5.0]])  # the third token is not trained
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    w = sampler_is_weights(old, torch.zeros(1, 3), mask, mode, low=0.5, high=2.0)
    assert w.flatten().tolist() == pytest.approx([*expected, 1.0])


def test_sequence_is_ratio_is_a_product_and_masks_the_whole_row():
    from grpolab.algo.importance import sampler_is_weights

    old = torch.full((2, 2), math.log(1.5))  # row ratio 1.5 x 1.5 = 2.25
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # row 1: one token, ratio 1.5
    truncated = sampler_is_weights(old, torch.zeros(2, 2), mask, "sequence_truncate", low=None, high=2.0)
    assert truncated.flatten().tolist() == pytest.approx([2.0, 2.0, 1.5, 1.0])
    masked = sampler_is_weights(old, torch.zeros(2, 2), mask, "sequence_mask", low=None, high=2.0)
    assert masked.flatten().tolist() == pytest.approx([0.0, 0.0, 1.5, 1.0])  # TRL's default mode drops row 0
    no_cap = sampler_is_weights(old, torch.zeros(2, 2), mask, "sequence_mask", low=2.0, high=None)
    assert no_cap.flatten().tolist() == pytest.approx([2.25, 2.25, 0.0, 1.0])  # below the lower bound: dropped


def test_off_policy_mask_drops_only_negative_advantage_sequences_that_drifted():
    from grpolab.algo.importance import off_policy_sequence_mask

    logp = torch.zeros(4, 2)
    # behaviour - logp per token; threshold 0.5 on the masked mean
    behaviour = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 1.0], [3.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    adv = torch.tensor([-1.0, -1.0, 1.0, -1.0])
    keep = off_policy_sequence_mask(adv, logp, behaviour, mask, threshold=0.5)
    # row 0: kl 0.5 <= 0.5 kept; row 1: kl 1 > 0.5 and A < 0 dropped; row 2: A > 0 kept; row 3: the
    # drifted token is masked, kl 0 -> kept
    assert keep.flatten().tolist() == [1.0, 0.0, 1.0, 1.0]
    empty = off_policy_sequence_mask(torch.tensor([-1.0]), torch.zeros(1, 2), torch.ones(1, 2), torch.zeros(1, 2), 0.1)
    assert empty.item() == 1.0  # no trained token: kl 0, kept (and contributes nothing anyway)
