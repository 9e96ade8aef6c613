"""The surrogates of every loss_type (algo.objectives) and their normalisers, against hand values."""

import math

import pytest
import torch

from grpolab.algo.loss import StepTotals, grpo_loss, normalise
from grpolab.algo.objectives import LOSS_TYPES, Objective, log_ratio, vespo_weights

SEQ = Objective(level="sequence")
TOKEN = Objective()


def run(loss_type, logp, old, adv, mask, objective=TOKEN, epsilon_high=None, **kwargs):
    n, t = mask.shape
    totals = StepTotals(num_sequences=n, num_tokens=float(mask.sum()), max_completion_length=t)
    return grpo_loss(
        logp, old, None, adv, mask, epsilon=0.2, epsilon_high=epsilon_high, beta=0.0,
        loss_type=loss_type, totals=totals, objective=objective, **kwargs,
    )  # fmt: skip


def test_every_loss_type_has_a_surrogate_and_a_normaliser():
    assert set(LOSS_TYPES) == {"grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo"}
    with pytest.raises(ValueError, match="unknown loss_type 'ppo'"):
        run("ppo", torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1), torch.ones(1, 1))


def test_sequence_ratio_is_the_exp_of_the_masked_mean_log_ratio():
    # deltas [0.2, 0.4, 9 (masked)] -> log r = (0.2 + 0.4) / 2 = 0.3 for the whole row
    old = torch.zeros(1, 3)
    logp = torch.tensor([[0.2, 0.4, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    assert log_ratio(logp, old, mask, "sequence").flatten().tolist() == pytest.approx([0.3])
    # GSPO with grpo's normaliser: r = e^0.3 = 1.3499 > 1.2, adv +1 -> clipped: loss -1.2, no gradient
    logp.requires_grad_(True)
    loss, metrics = run("grpo", logp, old, torch.tensor([1.0]), mask, SEQ)
    assert loss.item() == pytest.approx(-1.2)
    assert metrics["clip_ratio/high_mean"] == 1.0 and metrics["ratio_mean"] == pytest.approx(math.exp(0.3))
    # adv -1: -min(-1.3499, -1.2) = 1.3499 (unclipped); d/d logp_t = e^0.3 / 2 on each trained token
    loss, _ = run("grpo", logp, old, torch.tensor([-1.0]), mask, SEQ)
    assert loss.item() == pytest.approx(math.exp(0.3))
    loss.backward()
    assert logp.grad.flatten().tolist() == pytest.approx([math.exp(0.3) / 2, math.exp(0.3) / 2, 0.0])


def test_one_token_completions_give_the_token_ratio_at_sequence_level():
    logp, old, mask = torch.tensor([[0.1, 0.0], [-0.1, 0.0]]), torch.zeros(2, 2), torch.tensor([[1.0, 0], [1, 0]])
    seq = torch.exp(log_ratio(logp, old, mask, "sequence"))  # [2, 1]
    assert seq.flatten().tolist() == pytest.approx([math.exp(0.1), math.exp(-0.1)])
    adv = torch.tensor([1.0, -1.0])
    assert run("grpo", logp, old, adv, mask, SEQ)[0].item() == pytest.approx(
        run("grpo", logp, old, adv, mask)[0].item()
    )


def test_a_row_with_no_trained_token_adds_nothing_and_no_nan():
    logp, old = torch.tensor([[0.1, 0.2], [5.0, 5.0]]), torch.zeros(2, 2)
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])  # row 1: every token masked
    assert log_ratio(logp, old, mask, "sequence")[1].item() == 0.0  # 0 / clamp(0, 1): ratio 1, not NaN
    for loss_type in LOSS_TYPES:
        objective = SEQ if loss_type == "luspo" else Objective()
        loss, _ = run(loss_type, logp, old, torch.tensor([1.0, 1.0]), mask, objective, epsilon_high=5.0)
        alone, _ = run(loss_type, logp[:1], old[:1], torch.tensor([1.0]), mask[:1], objective, epsilon_high=5.0)
        assert math.isfinite(loss.item())
        if loss_type in ("grpo", "sapo", "dr_grpo", "luspo"):  # normalised per sequence: 2 rows halve it
            assert loss.item() == pytest.approx(alone.item() / 2, rel=1e-6), loss_type
        else:  # per token: the masked row adds no token
            assert loss.item() == pytest.approx(alone.item(), rel=1e-6), loss_type


def test_cispo_clips_the_weight_and_keeps_every_gradient():
    # r = [e, 1]; eps_high 2 caps e at 2; adv +1: token losses -w * logp = [-2 * -1, -1 * -2] = [2, 2]
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    old = torch.tensor([[-2.0, -2.0]])
    loss, metrics = run("cispo", logp, old, torch.tensor([1.0]), torch.ones(1, 2), epsilon_high=2.0)
    assert loss.item() == pytest.approx((2 + 2) / 2)  # dapo normaliser: 2 tokens
    loss.backward()
    assert logp.grad.flatten().tolist() == pytest.approx([-2 / 2, -1 / 2])  # the clipped token still has a gradient
    assert metrics["cispo_clip_ratio"] == 0.5


def test_sapo_gate_by_hand():
    logp = torch.zeros(1, 1, requires_grad=True)
    # on-policy, adv +1, tau 1: -(4 / 1) * sigmoid(0) = -2; gradient -4 * sigma'(0) = -1, as plain GRPO's
    loss, _ = run("sapo", logp, torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1))
    assert loss.item() == pytest.approx(-2.0)
    loss.backward()
    assert logp.grad.item() == pytest.approx(-1.0)
    # adv -1 uses tau_neg 1.05: -(4 / 1.05) * 0.5 * -1 = 1.90476
    loss, _ = run("sapo", torch.zeros(1, 1), torch.zeros(1, 1), torch.tensor([-1.0]), torch.ones(1, 1))
    assert loss.item() == pytest.approx(2 / 1.05)
    # r = e, adv +1: s = sigmoid(e - 1) = 0.84788 -> loss -4s = -3.3915; d/dlogp = -4 s (1 - s) * e = -1.4024
    logp = torch.ones(1, 1, requires_grad=True)
    loss, _ = run("sapo", logp, torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1))
    s = 1 / (1 + math.exp(-(math.e - 1)))
    assert loss.item() == pytest.approx(-4 * s)
    loss.backward()
    assert logp.grad.item() == pytest.approx(-4 * s * (1 - s) * math.e, rel=1e-5)


def test_vespo_gamma_weight_by_hand():
    mask = torch.ones(1, 2)
    half_ln2 = torch.full((1, 2), math.log(2) / 2)  # sum of the log-ratios ln 2: w = 2
    # adv +1: k 2, lambda 3 -> e^3 * 2^2 * e^-6 = 4 e^-3 = 0.19915; adv -1: k 3, lambda 2 -> 8 e^-2 = 1.08268
    assert vespo_weights(torch.tensor([1.0]), half_ln2, mask, Objective()).item() == pytest.approx(4 * math.exp(-3))
    assert vespo_weights(torch.tensor([-1.0]), half_ln2, mask, Objective()).item() == pytest.approx(8 * math.exp(-2))
    # w = 1 gives phi 1 for either sign; sampler IS weights [0.5, 1] enter w: 2 * 0.5 = 1 -> phi 1
    assert vespo_weights(torch.tensor([1.0]), torch.zeros(1, 2), mask, Objective()).item() == pytest.approx(1.0)
    is_w = torch.tensor([[0.5, 1.0]])
    assert vespo_weights(torch.tensor([1.0]), half_ln2, mask, Objective(), is_w).item() == pytest.approx(1.0)
    # the loss is -phi * A * logp, dapo-normalised: logp [-1, -3], phi 4e^-3, A 1 -> 4e^-3 * 4 / 2
    logp = torch.tensor([[-1.0, -3.0]])
    loss, metrics = run("vespo", logp, logp - half_ln2, torch.tensor([1.0]), mask)
    assert loss.item() == pytest.approx(4 * math.exp(-3) * 4 / 2, rel=1e-5)
    assert metrics["vespo/phi_seq_mean"] == pytest.approx(4 * math.exp(-3), rel=1e-5)
    # IS weights go into phi (here making it 1), not onto the loss: (1 + 3) / 2 = 2
    loss, _ = run("vespo", logp, logp - half_ln2, torch.tensor([1.0]), mask, is_weights=is_w)
    assert loss.item() == pytest.approx(2.0, rel=1e-5)


def test_luspo_scales_each_sequence_loss_by_its_length():
    # ratio 1, adv +1: every sequence's loss is -1; lengths 1 and 3 -> (-1 * 1 + -1 * 3) / 2 sequences = -2
    mask = torch.tensor([[1.0, 0, 0, 0], [1, 1, 1, 0]])
    loss, _ = run("luspo", torch.zeros(2, 4), torch.zeros(2, 4), torch.tensor([1.0, 1.0]), mask, SEQ)
    assert loss.item() == pytest.approx(-2.0)
    totals = StepTotals(num_sequences=2, num_tokens=4.0, max_completion_length=4)
    assert normalise(torch.ones(2, 4), mask, "luspo", totals).item() == pytest.approx(4 / 2)


def test_token_weights_and_is_weights_multiply_the_policy_loss():
    # dapo, ratio 1, adv +1: token losses -1; token weights [1, 0] (a mask) and IS weights [2, 3] -> -2 / 2
    loss, _ = run(
        "dapo", torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2),
        token_weights=torch.tensor([[1.0, 0.0]]), is_weights=torch.tensor([[2.0, 3.0]]),
    )  # fmt: skip
    assert loss.item() == pytest.approx(-1.0)


@pytest.mark.parametrize("loss_type", sorted(LOSS_TYPES))
def test_a_batch_with_every_token_masked_gives_zero_loss_and_zero_gradient(loss_type):
    # mask_truncated_completions on a batch where every completion was cut: nothing is trained
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], requires_grad=True)
    objective = SEQ if loss_type == "luspo" else TOKEN
    loss, metrics = run(loss_type, logp, logp.detach() - 0.3, torch.tensor([1.0, -1.0]), torch.zeros(2, 2),
                        objective, epsilon_high=5.0)  # fmt: skip
    loss.backward()
    assert loss.item() == 0.0 and all(math.isfinite(v) for v in metrics.values())
    assert torch.equal(logp.grad, torch.zeros(2, 2))
