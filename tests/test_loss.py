import math

import pytest
import torch

from grpolab.algo.logprobs import token_logprobs
from grpolab.algo.loss import StepTotals, grpo_loss, normalise, per_token_loss


def totals(n=2, tokens=4.0, max_len=4):
    return StepTotals(num_sequences=n, num_tokens=tokens, max_completion_length=max_len)


def test_normalisers_against_hand_values():
    # two sequences with 1 and 3 trained tokens, each token loss 1 (sum 4)
    loss = torch.ones(2, 4)
    mask = torch.tensor([[1.0, 0, 0, 0], [1, 1, 1, 0]])
    assert normalise(loss, mask, "grpo", totals()).item() == pytest.approx(1.0)  # (1/1 + 3/3) / 2
    assert normalise(loss, mask, "bnpo", totals()).item() == pytest.approx(1.0)  # 4 / 4
    assert normalise(loss, mask, "dapo", totals()).item() == pytest.approx(1.0)  # 4 / 4
    assert normalise(loss, mask, "dr_grpo", totals()).item() == pytest.approx(0.5)  # 4 / (2 * 4)
    # unequal token losses separate grpo from dapo: seq 0 loss 2, seq 1 losses 1,1,1
    loss2 = torch.tensor([[2.0, 9, 9, 9], [1, 1, 1, 9]])
    assert normalise(loss2, mask, "grpo", totals()).item() == pytest.approx((2 / 1 + 3 / 3) / 2)  # 1.5
    assert normalise(loss2, mask, "dapo", totals()).item() == pytest.approx(5 / 4)  # 1.25
    assert normalise(loss2, mask, "dr_grpo", totals()).item() == pytest.approx(5 / 8)


def test_clipping_by_hand():
    logp = torch.tensor([[1.0, -1.0]])
    old = torch.zeros(1, 2)
    # ratio e (2.718) with adv +1: min(2.718, clip -> 1.2) = 1.2 -> loss -1.2
    policy, _, diag = per_token_loss(logp, old, None, torch.tensor([1.0]), epsilon=0.2, epsilon_high=None, beta=0)
    assert policy[0, 0].item() == pytest.approx(-1.2)
    # ratio e^-1 (0.3679) with adv +1: min(0.3679, 0.8) = 0.3679 -> loss -0.3679 (not clipped)
    assert policy[0, 1].item() == pytest.approx(-math.exp(-1))
    assert diag["high_clipped"][0].tolist() == [1.0, 0.0]
    # epsilon_high 2.0 (DAPO clip-higher): ratio e < 3 is not clipped -> loss -e
    policy, _, _ = per_token_loss(logp, old, None, torch.tensor([1.0]), epsilon=0.2, epsilon_high=2.0, beta=0)
    assert policy[0, 0].item() == pytest.approx(-math.e)
    # adv -1, ratio e^-1 < 0.8: -min(-0.3679, -0.8) = 0.8 (clipped below)
    policy, _, diag = per_token_loss(logp, old, None, torch.tensor([-1.0]), epsilon=0.2, epsilon_high=None, beta=0)
    assert policy[0, 1].item() == pytest.approx(0.8)
    assert diag["low_clipped"][0].tolist() == [0.0, 1.0]


def test_k3_kl_by_hand():
    logp = torch.tensor([[0.0]])
    ref = torch.tensor([[math.log(0.5)]])
    # delta = ln 0.5: e^delta - delta - 1 = 0.5 + 0.6931 - 1 = 0.19315
    _, kl_term, diag = per_token_loss(logp, logp, ref, torch.tensor([0.0]), epsilon=0.2, epsilon_high=None, beta=0.1)
    assert diag["kl"].item() == pytest.approx(0.5 + math.log(2) - 1, abs=1e-6)
    assert kl_term.item() == pytest.approx(0.1 * (0.5 + math.log(2) - 1), abs=1e-6)


def test_ratio_one_and_kl_zero_when_policy_equals_reference():
    logp = torch.randn(3, 5)
    mask = torch.ones(3, 5)
    _, metrics = grpo_loss(
        logp,
        logp.detach(),
        logp.detach(),
        torch.tensor([1.0, -1.0, 0.5]),
        mask,
        epsilon=0.2,
        epsilon_high=None,
        beta=0.04,
        loss_type="dapo",
        totals=totals(3, 15, 5),
    )
    assert metrics["ratio_mean"] == 1.0
    assert metrics["kl"] == 0.0
    assert metrics["clip_ratio/region_mean"] == 0.0


def test_chunked_logprobs_equal_unchunked():
    torch.manual_seed(0)
    logits, ids = torch.randn(5, 7, 11), torch.randint(0, 11, (5, 7))
    full, ent_full = token_logprobs(logits, ids, temperature=0.7, chunk_rows=5)
    chunked, ent_chunked = token_logprobs(logits, ids, temperature=0.7, chunk_rows=2)
    assert torch.allclose(full, chunked) and torch.allclose(ent_full, ent_chunked)
    expected = torch.log_softmax(logits / 0.7, -1).gather(-1, ids[..., None]).squeeze(-1)
    assert torch.allclose(full, expected)
