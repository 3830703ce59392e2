"""editr1.training.losses on tiny literal tensors; every expected value is worked out by hand in
the comments (torchtune style: literal tensors in, assert_close against the hand result)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from editr1.training.losses import (
    IGNORE_INDEX,
    build_sft_labels,
    categorical_kl,
    exact_reward_spread,
    expected_action_objective,
    expected_rewards,
    flow_sde_step_mean,
    gaussian_kl_equal_std,
    gaussian_logprob,
    gcpo_loss,
    gcpo_rewards,
    grpo_advantages,
    group_advantages,
    solved_pairs,
    k3_kl,
    linear_cross_entropy,
    mean_advantage_over_length,
    ppo_clip_token_loss,
    score_action_rewards,
    sft_token_loss,
)

torch.set_num_threads(1)
NAN = float("nan")


def t(values, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


# --------------------------------------------------------------------------- SFT


def test_build_sft_labels_masks_outside_completion():
    input_ids = torch.tensor([[11, 12, 13, 14], [21, 22, 23, 0]])
    completion = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 0]])  # row 2: last token is padding
    labels = build_sft_labels(input_ids, completion)
    assert labels.tolist() == [[-100, -100, 13, 14], [-100, 22, 23, -100]]
    with pytest.raises(ValueError):
        build_sft_labels(input_ids, completion[:, :3])


def test_sft_token_loss_by_hand_with_shift_and_mask():
    # One sequence of 4 tokens, vocabulary 3. labels aligned with input_ids: [-100, -100, 2, 0].
    # After the shift, logits[t] predicts labels[t+1]:
    #   t=0 -> labels[1] = -100 (masked)
    #   t=1 -> labels[2] = 2, logits [1, 0, 2]: log p(2) = 2 - log(e^1 + e^0 + e^2) = 2 - log(1 + e + e^2)
    #   t=2 -> labels[3] = 0, logits [0, 0, 0]: log p(0) = -log 3
    #   t=3 -> nothing (no label after the last token)
    # loss = mean over the 2 targets = ( (log(1 + e + e^2) - 2) + log 3 ) / 2
    logits = t([[[5, 5, 5], [1, 0, 2], [0, 0, 0], [9, 0, 0]]], torch.float32).requires_grad_()
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 2, 0]])
    e = math.e
    expected = ((math.log(1 + e + e**2) - 2) + math.log(3)) / 2
    loss = sft_token_loss(logits, labels)
    assert_close(loss, torch.tensor(expected, dtype=torch.float32))
    loss.backward()
    # positions 0 and 3 predict no supervised token: no gradient reaches them
    assert torch.all(logits.grad[0, 0] == 0) and torch.all(logits.grad[0, 3] == 0)
    # at t=2 the gradient is (softmax - onehot) / 2 = ([1/3, 1/3, 1/3] - [1, 0, 0]) / 2
    assert_close(logits.grad[0, 2], t([-1 / 3, 1 / 6, 1 / 6], torch.float32))


def test_sft_token_loss_is_token_weighted_across_the_batch():
    # Row A has 1 target, row B has 3 (label 1 at t=1 is predicted by logits[:, 0], etc.):
    #   row A target: logits [0, 0, 0] -> CE = log 3
    #   row B targets: logits [100, 0, 0] on label 0 -> CE = log(1 + 2 e^-100) = 0 in float32
    #   token mean = (log 3 + 0 + 0 + 0)/4; a row mean would be (log 3 + 0)/2.
    logits = torch.zeros(2, 4, 3)
    logits[1, :3, 0] = 100.0
    labels = torch.tensor([[IGNORE_INDEX, 1, IGNORE_INDEX, IGNORE_INDEX], [IGNORE_INDEX, 0, 0, 0]])
    assert_close(sft_token_loss(logits, labels), torch.tensor(math.log(3) / 4))


def test_sft_token_loss_with_weights_by_hand():
    # Same targets as the hand test above: CE at t=1 is a = log(1 + e + e^2) - 2, at t=2 b = log 3.
    # Weights aligned with labels [w0, w1, w2, w3] = [9, 9, 3, 1]: the shifted weights of the two
    # targets are w2 = 3 (label 2) and w3 = 1 (label 0); positions without a label count nothing.
    # loss = (3a + 1b) / (3 + 1).
    logits = t([[[5, 5, 5], [1, 0, 2], [0, 0, 0], [9, 0, 0]]], torch.float32)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 2, 0]])
    e = math.e
    a, b = math.log(1 + e + e**2) - 2, math.log(3)
    weighted = sft_token_loss(logits, labels, t([[9, 9, 3, 1]], torch.float32))
    assert_close(weighted, torch.tensor((3 * a + b) / 4, dtype=torch.float32))
    assert_close(sft_token_loss(logits, labels, torch.ones(1, 4)), sft_token_loss(logits, labels))
    with pytest.raises(ValueError, match="labels' shape"):
        sft_token_loss(logits, labels, torch.ones(1, 3))


def test_sft_token_loss_refuses_a_batch_without_targets():
    with pytest.raises(ValueError, match="no supervised token"):
        # the only label is at position 0, which nothing predicts
        sft_token_loss(torch.zeros(1, 3, 4), torch.tensor([[1, IGNORE_INDEX, IGNORE_INDEX]]))


# --------------------------------------------------------------------------- GCPO rewards


def test_linear_cross_entropy_by_hand():
    # hidden [[1], [0]], LM head weight [[1], [0]] (V = 2, H = 1): logits [1, 0] and [0, 0].
    # targets [0, 1]: CE0 = log(1 + e^-1), CE1 = log 2; weights [3, 1] -> (3 CE0 + CE1) / 4.
    # d/d hidden_i = share_i · (softmax_i − onehot_i) @ W with share = [3/4, 1/4]:
    #   row 0: (σ(1) − 1)·1 + (1 − σ(1))·0 = σ(1) − 1;  row 1: (1/2 − 0)·1 + (1/2 − 1)·0 = 1/2.
    hidden = t([[1.0], [0.0]], torch.float32).requires_grad_()
    weight = t([[1.0], [0.0]], torch.float32).requires_grad_()
    loss = linear_cross_entropy(hidden, weight, torch.tensor([0, 1]), t([3.0, 1.0], torch.float32), chunk=1)
    ce0, ce1 = math.log(1 + math.exp(-1)), math.log(2)
    assert_close(loss, torch.tensor((3 * ce0 + ce1) / 4))
    loss.backward()
    sigma = 1 / (1 + math.exp(-1))
    assert_close(hidden.grad, t([[0.75 * (sigma - 1)], [0.25 * 0.5]], torch.float32))
    # d/d W[v] = Σ_i share_i (softmax_i[v] − onehot_i[v]) hidden_i: only row 0 has hidden ≠ 0.
    assert_close(weight.grad, t([[0.75 * (sigma - 1)], [0.75 * (1 - sigma)]], torch.float32))


@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
@pytest.mark.parametrize("weighted", [False, True])
def test_linear_cross_entropy_equals_the_packed_logits_loss(chunk, weighted):
    # The fused loss against `sft_token_loss` on logits = hidden @ W.T in its packed layout
    # (a leading -100 label, an unused last logit row): same value, same gradients.
    gen = torch.Generator().manual_seed(0)
    n, h, v = 11, 5, 13
    hidden0, weight0 = torch.randn(n, h, generator=gen), torch.randn(v, h, generator=gen)
    targets = torch.randint(0, v, (n,), generator=gen)
    token_weights = torch.rand(n, generator=gen) * 4 + 0.5 if weighted else None
    hidden, weight = hidden0.clone().requires_grad_(), weight0.clone().requires_grad_()
    fused = linear_cross_entropy(hidden, weight, targets, token_weights, chunk=chunk)
    fused.backward()
    ref_hidden, ref_weight = hidden0.clone().requires_grad_(), weight0.clone().requires_grad_()
    logits = torch.cat([ref_hidden @ ref_weight.t(), torch.zeros(1, v)])[None]
    labels = torch.cat([torch.tensor([IGNORE_INDEX]), targets])[None]
    packed_weights = None if token_weights is None else torch.cat([torch.zeros(1), token_weights])[None]
    plain = sft_token_loss(logits, labels, packed_weights)
    plain.backward()
    assert_close(fused, plain)
    assert_close(hidden.grad, ref_hidden.grad)
    assert_close(weight.grad, ref_weight.grad)


def test_linear_cross_entropy_refuses_bad_input():
    hidden, weight, targets = torch.zeros(2, 3), torch.zeros(4, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="hidden"):
        linear_cross_entropy(hidden, torch.zeros(4, 2), targets)
    with pytest.raises(ValueError, match="targets"):
        linear_cross_entropy(hidden, weight, torch.tensor([0]))
    with pytest.raises(ValueError, match="no supervised token"):
        linear_cross_entropy(torch.zeros(0, 3), weight, torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="sum to zero"):
        linear_cross_entropy(hidden, weight, targets, torch.zeros(2))


def test_gcpo_rewards_with_a_tie_by_hand():
    # tau_w = [7, 5, 5], tau_l = [5, 3, 8], N = 3.
    # r_w[j] = 1/3 * sum_k 1[tau_w[j] > tau_l[k]]
    #   j=1 (7): 7>5 1, 7>3 1, 7>8 0 -> 2/3
    #   j=2 (5): 5>5 0 (tie), 5>3 1, 5>8 0 -> 1/3
    #   j=3 (5): same as j=2 -> 1/3
    # r_l[j] = 1/3 * sum_k 1[tau_l[j] < tau_w[k]]
    #   j=1 (5): 5<7 1, 5<5 0 (tie), 5<5 0 -> 1/3
    #   j=2 (3): 3<7 1, 3<5 1, 3<5 1 -> 1
    #   j=3 (8): 8<7 0, 8<5 0, 8<5 0 -> 0
    # A_w = r_w - mean(r_w), mean = (2/3 + 1/3 + 1/3)/3 = 4/9 -> [2/9, -1/9, -1/9]
    # A_l = r_l - mean(r_l), mean = (1/3 + 1 + 0)/3 = 4/9 -> [-1/9, 5/9, -4/9]
    r_w, r_l = gcpo_rewards(t([7, 5, 5]), t([5, 3, 8]))
    assert_close(r_w, t([2 / 3, 1 / 3, 1 / 3]))
    assert_close(r_l, t([1 / 3, 1, 0]))
    assert_close(group_advantages(r_w), t([2 / 9, -1 / 9, -1 / 9]))
    assert_close(group_advantages(r_l), t([-1 / 9, 5 / 9, -4 / 9]))


def test_solved_pairs_by_hand():
    # pair 0: tau_w [8, 9] vs tau_l [3, 2]: every preferred trace beats every other -> solved
    # pair 1: tau_w [8, 5] vs tau_l [5, 2]: 5 > 5 is a tie (r_w [1, 1/2]) -> not solved
    # pair 2: tau_w [8, NaN] vs tau_l [3, 2]: the failed preferred trace gets 0 -> not solved
    # pair 3: tau_w [9, 9] vs tau_l [3, NaN]: the failed trace on the other side gets reward 0 -> not solved
    # pair 4: tau_w [4, 4] vs tau_l [1, 3]: r_w [1, 1], r_l [1, 1] -> solved
    r_w, r_l = gcpo_rewards(t([[8, 9], [8, 5], [8, math.nan], [9, 9], [4, 4]]),
                            t([[3, 2], [5, 2], [3, 2], [3, math.nan], [1, 3]]))
    assert r_l[0].tolist() == [1, 1] and r_l[3].tolist() == [1, 0]
    assert solved_pairs(r_w, r_l).tolist() == [True, False, False, False, True]


def test_gcpo_rewards_parse_failures_always_lose():
    # tau_w = [6, NaN, 2], tau_l = [4, 7, NaN]; a failed trace gets 0 and counts as beaten.
    # r_w: j=1 (6): 6>4 1, 6>7 0, vs failed 1 -> 2/3
    #      j=2 (NaN): 0
    #      j=3 (2): 2>4 0, 2>7 0, vs failed 1 -> 1/3
    # r_l: j=1 (4): 4<6 1, vs failed 1, 4<2 0 -> 2/3
    #      j=2 (7): 7<6 0, vs failed 1, 7<2 0 -> 1/3
    #      j=3 (NaN): 0
    # A_w: mean 1/3 -> [1/3, -1/3, 0]; A_l: mean 1/3 -> [1/3, 0, -1/3]
    r_w, r_l = gcpo_rewards(t([6, NAN, 2]), t([4, 7, NAN]))
    assert_close(r_w, t([2 / 3, 0, 1 / 3]))
    assert_close(r_l, t([2 / 3, 1 / 3, 0]))
    assert_close(group_advantages(r_w), t([1 / 3, -1 / 3, 0]))
    assert_close(group_advantages(r_l), t([1 / 3, 0, -1 / 3]))
    # all failed: no one wins anything
    r_w, r_l = gcpo_rewards(t([NAN, NAN]), t([NAN, NAN]))
    assert_close(r_w, t([0.0, 0.0]))
    assert_close(r_l, t([0.0, 0.0]))
    # a failure on the rejected side scores 0, never the "low score is good" reward a fallback of 0
    # would give it: vs tau_w = [9, 9], tau_l = [NaN, 0] -> r_l = [0, 1]
    _, r_l = gcpo_rewards(t([9, 9]), t([NAN, 0]))
    assert_close(r_l, t([0, 1]))


def test_gcpo_rewards_batched_equals_looped():
    g = torch.Generator().manual_seed(0)
    tau_w = torch.randint(0, 4, (5, 4), generator=g).double()  # small range: many ties
    tau_l = torch.randint(0, 4, (5, 4), generator=g).double()
    tau_w[1, 2] = NAN
    tau_l[3, 0] = NAN
    r_w, r_l = gcpo_rewards(tau_w, tau_l)
    assert r_w.shape == r_l.shape == (5, 4)
    for p in range(5):
        rw_p, rl_p = gcpo_rewards(tau_w[p], tau_l[p])
        assert_close(r_w[p], rw_p)
        assert_close(r_l[p], rl_p)
        # and against the definition written as loops
        for j in range(4):
            w, l = tau_w[p, j].item(), tau_l[p, j].item()
            exp_w = 0.0 if math.isnan(w) else sum(
                (math.isnan(x) or w > x) for x in tau_l[p].tolist()) / 4
            exp_l = 0.0 if math.isnan(l) else sum(
                (math.isnan(x) or l < x) for x in tau_w[p].tolist()) / 4
            assert r_w[p, j].item() == pytest.approx(exp_w) and r_l[p, j].item() == pytest.approx(exp_l)
    assert_close(group_advantages(r_w)[2], group_advantages(r_w[2]))
    with pytest.raises(ValueError):
        gcpo_rewards(tau_w, tau_l[:, :3])


def test_grpo_advantages_population_std_and_constant_groups():
    # r = [1, 2, 3, 4]: mean 2.5, population variance (2.25 + .25 + .25 + 2.25)/4 = 1.25
    # A = (r - 2.5) / (sqrt(1.25) + 1e-4)
    denom = math.sqrt(1.25) + 1e-4
    assert_close(grpo_advantages(t([1, 2, 3, 4])), t([-1.5, -0.5, 0.5, 1.5]) / denom)
    # a constant group is exactly zero (its mean 0.1 rounds, so (r - mean)/eps would not be)
    assert torch.equal(grpo_advantages(t([0.1, 0.1, 0.1])), t([0.0, 0.0, 0.0]))
    assert torch.equal(grpo_advantages(t([3.0])), t([0.0]))
    # batched over prompt groups equals per group
    rewards = t([[1, 2, 3, 4], [0.1, 0.1, 0.1, 0.1], [0, 0, 1, 0]])
    batched = grpo_advantages(rewards)
    for i in range(3):
        assert_close(batched[i], grpo_advantages(rewards[i]))
    # [0, 0, 1, 0]: mean 1/4, var (3 * 1/16 + 9/16)/4 = 3/16, A[2] = (3/4)/(sqrt(3)/4 + 1e-4)
    assert_close(batched[2, 2], torch.tensor(0.75 / (math.sqrt(3) / 4 + 1e-4), dtype=torch.float64))
    with pytest.raises(ValueError):
        grpo_advantages(t([1.0, NAN]))


# --------------------------------------------------------------------------- PPO clip, KL


def _ppo_example():
    # eps = 0.2, logp_old = 0 so ratio = exp(logp_new).
    # trace 0, A = +2, ratios [1.1, 1.5, 9.0], third token masked out:
    #   1.1: min(2.2, clip 1.1 * 2 = 2.2) = 2.2
    #   1.5: min(3.0, 1.2 * 2 = 2.4) = 2.4   <- clipped (A > 0, ratio > 1.2)
    #   per-trace mean = (2.2 + 2.4)/2 = 2.3
    # trace 1, A = -1, ratios [0.5, 1.1, 1.5], all masked in:
    #   0.5: min(-0.5, 0.8 * -1 = -0.8) = -0.8  <- clipped (A < 0, ratio < 0.8)
    #   1.1: min(-1.1, -1.1) = -1.1
    #   1.5: min(-1.5, 1.2 * -1 = -1.2) = -1.5  (pessimistic side: not clipped, gradient flows)
    #   per-trace mean = -3.4/3
    # loss = -(2.3 - 3.4/3)/2 = -(6.9 - 3.4)/6 = -3.5/6 = -7/12
    ratios = t([[1.1, 1.5, 9.0], [0.5, 1.1, 1.5]])
    logp_new = ratios.log().requires_grad_()
    logp_old = torch.zeros(2, 3, dtype=torch.float64)
    adv = t([2.0, -1.0])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    return logp_new, logp_old, adv, mask


def test_ppo_clip_token_loss_by_hand():
    logp_new, logp_old, adv, mask = _ppo_example()
    loss, stats = ppo_clip_token_loss(logp_new, logp_old, adv, mask, clip_eps=0.2)
    assert_close(loss, torch.tensor(-7 / 12, dtype=torch.float64))
    # clipped tokens: trace 0 token 1 and trace 1 token 0 -> 2 of 5 masked tokens
    assert stats["clip_fraction"] == pytest.approx(2 / 5)
    # mean ratio over the 5 masked tokens: (1.1 + 1.5 + 0.5 + 1.1 + 1.5)/5 = 5.7/5
    assert stats["ratio"] == pytest.approx(5.7 / 5)
    masked = [1.1, 1.5, 0.5, 1.1, 1.5]
    assert stats["approx_kl"] == pytest.approx(sum(r - 1 - math.log(r) for r in masked) / 5)
    assert stats["abs_log_ratio"] == pytest.approx(sum(abs(math.log(r)) for r in masked) / 5)
    loss.backward()
    # d loss / d logp = -(1/B)(1/L_i) * ratio * A on unclipped tokens, 0 on clipped or masked ones:
    #   trace 0: [-(1/2)(1/2)(1.1 * 2), 0, 0] = [-0.55, 0, 0]
    #   trace 1: [0, -(1/2)(1/3)(1.1 * -1), -(1/2)(1/3)(1.5 * -1)] = [0, 1.1/6, 0.25]
    assert_close(logp_new.grad, t([[-0.55, 0, 0], [0, 1.1 / 6, 0.25]]))


def test_ppo_clip_at_the_sampling_policy():
    # logp_new == logp_old: ratio 1 everywhere, loss = -mean(A), nothing clipped, KL 0
    logp = t([[-1.0, -2.0], [-0.5, -3.0]])
    loss, stats = ppo_clip_token_loss(logp, logp.clone(), t([0.5, -1.5]), torch.ones(2, 2), clip_eps=0.2)
    assert_close(loss, torch.tensor(0.5, dtype=torch.float64))  # -(0.5 - 1.5)/2
    assert stats == {"clip_fraction": 0.0, "ratio": 1.0, "approx_kl": 0.0, "abs_log_ratio": 0.0}
    with pytest.raises(ValueError, match="at least one masked token"):
        ppo_clip_token_loss(logp, logp, t([1.0, 1.0]), torch.tensor([[1, 1], [0, 0]]), clip_eps=0.2)


def test_k3_kl_two_tokens_by_hand():
    # trace 0: logp = [0, 0], logp_ref = [ln 2, -ln 2], d = logp_ref - logp
    #   d = ln 2:  e^d - d - 1 = 2 - ln 2 - 1 = 1 - ln 2
    #   d = -ln 2: 1/2 + ln 2 - 1 = ln 2 - 1/2
    #   mean = (1 - ln 2 + ln 2 - 1/2)/2 = 1/4
    # trace 1: first token d = 0 -> 0; second token masked (d = 5 would be e^5 - 6)
    #   mean = 0
    # k3 = (1/4 + 0)/2 = 1/8
    logp = torch.zeros(2, 2, dtype=torch.float64)
    logp_ref = t([[math.log(2), -math.log(2)], [0.0, 5.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    assert_close(k3_kl(logp, logp_ref, mask), torch.tensor(1 / 8, dtype=torch.float64))
    assert_close(k3_kl(logp, logp.clone(), mask), torch.tensor(0.0, dtype=torch.float64))


def test_gcpo_loss_adds_beta_k3_and_checks_the_reference():
    logp_new, logp_old, adv, mask = _ppo_example()
    logp_ref = t([[-0.1, 0.2, 3.0], [0.0, -0.3, 0.1]])
    policy, _ = ppo_clip_token_loss(logp_new, logp_old, adv, mask, clip_eps=0.2)
    kl = k3_kl(logp_new, logp_ref, mask)
    loss, stats = gcpo_loss(logp_new, logp_old, logp_ref, adv, mask, clip_eps=0.2, beta=0.1)
    assert_close(loss, policy + 0.1 * kl)
    assert stats["kl"] == pytest.approx(kl.item()) and stats["policy_loss"] == pytest.approx(-7 / 12)
    # beta = 0: the policy loss alone; the KL is still reported when a reference is given
    loss0, stats0 = gcpo_loss(logp_new, logp_old, logp_ref, adv, mask, clip_eps=0.2, beta=0.0)
    assert_close(loss0, policy)
    assert stats0["kl"] == pytest.approx(kl.item())
    loss_none, stats_none = gcpo_loss(logp_new, logp_old, None, adv, mask, clip_eps=0.2, beta=0.0)
    assert_close(loss_none, policy)
    assert "kl" not in stats_none
    with pytest.raises(ValueError, match="needs logp_ref"):
        gcpo_loss(logp_new, logp_old, None, adv, mask, clip_eps=0.2, beta=0.02)
    # a policy mask narrows the policy term only; the KL still covers every token of `mask`
    last = torch.tensor([[0, 0, 1], [0, 0, 1]])
    narrow, _ = ppo_clip_token_loss(logp_new, logp_old, adv, last, clip_eps=0.2)
    loss_last, stats_last = gcpo_loss(logp_new, logp_old, logp_ref, adv, mask, clip_eps=0.2, beta=0.1,
                                      policy_mask=last)
    assert_close(loss_last, narrow + 0.1 * kl)
    assert stats_last["kl"] == pytest.approx(kl.item()) and not torch.allclose(narrow, policy)


def test_score_action_rewards_by_hand():
    # N = 2, scores 0..3. Preferred side's opponents: tau_l = [1, NaN] -> a written v wins against 1
    # when v > 1, and always against the failed trace: v = 0, 1 -> 1/2; v = 2, 3 -> 1.
    # Rejected side's opponents: tau_w = [2, 3] -> v wins against k when v < tau_w[k]:
    # v = 0, 1 -> 1; v = 2 -> 1/2; v = 3 -> 0. The last action (no score written) gets 0.
    rewards = score_action_rewards(t([2.0, 3.0]), t([1.0, NAN]), t([0.0, 1.0, 2.0, 3.0]))
    assert rewards.shape == (2, 2, 5)  # [side, trace, action]: every trace of a side alike
    expected_w = [0.5, 0.5, 1.0, 1.0, 0.0]
    assert_close(rewards[0], torch.tensor([expected_w, expected_w]))
    assert_close(rewards[1, 0], torch.tensor([1.0, 1.0, 0.5, 0.0, 0.0]))
    assert_close(rewards[0, 1], torch.tensor([0.5, 0.5, 1.0, 1.0, 0.0]))
    # batched [P, N] -> [P, 2, N, S + 1], and the same as gcpo_rewards at the scores actually written
    tau_w, tau_l = t([[3.0, 1.0], [2.0, 2.0]]), t([[0.0, 2.0], [NAN, 3.0]])
    batched = score_action_rewards(tau_w, tau_l, t([0.0, 1.0, 2.0, 3.0]))
    r_w, r_l = gcpo_rewards(tau_w, tau_l)
    picked_w = batched[:, 0].gather(-1, tau_w.long().unsqueeze(-1)).squeeze(-1)
    assert_close(picked_w, r_w.float())
    valid = ~tau_l.isnan()
    picked_l = batched[:, 1].gather(-1, tau_l.nan_to_num(0).long().unsqueeze(-1)).squeeze(-1)
    assert_close(picked_l[valid], r_l.float()[valid])


def test_expected_action_objective_by_hand():
    # Two actions, p_old = [0.5, 0.5], rewards [1, 0], baseline 0.5 -> A = [0.5, -0.5].
    # Unchanged policy: 0.5 * 0.5 + 0.5 * -0.5 = 0. New p = [0.8, 0.2]: ratios [1.6, 0.4], clip 0.2
    # -> min(1.6 * .5, 1.2 * .5) = 0.6 and min(0.4 * -.5, 0.8 * -.5) = -0.4 -> 0.5 * 0.6 + 0.5 * -0.4 = 0.1
    old = t([[0.5, 0.5]]).log()
    rewards, baseline = t([[1.0, 0.0]]), t([0.5])
    assert_close(expected_action_objective(old, old, rewards, baseline, 0.2), t([0.0]))
    assert_close(expected_action_objective(t([[0.8, 0.2]]).log(), old, rewards, baseline, 0.2), t([0.1]))
    # its gradient raises the better action: d/dlogit_0 of p_0 A_0 + p_1 A_1 at p = .5 is .25 > 0
    logits = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    expected_action_objective(torch.log_softmax(logits, -1), old, rewards, baseline, 0.2).sum().backward()
    assert logits.grad[0, 0] > 0 > logits.grad[0, 1]


def test_exact_reward_spread_by_hand():
    # p_old = [.5, .25, .25, 0], R = [0, 1, 1, 0] -> R̄ = .5, spread = .5*.5 + .25*.5 + .25*.5 = .5;
    # a row whose every likely action earns 1 (a solved pair) has spread 0.
    logp = t([[0.5, 0.25, 0.25, 0.0], [0.7, 0.3, 0.0, 0.0]]).log()
    rewards = t([[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    assert_close(exact_reward_spread(logp, rewards), t([0.5, 0.0]))


def test_expected_rewards_and_the_log_weighting_by_hand():
    # p = [.5, .25, .2, .05], R = [0, 1, 1, 0] -> R̄ = .45; p = [.97, .02, .005, .005], R = [0, 1, 0, 0] -> R̄ = .02
    logp = t([[0.5, 0.25, 0.2, 0.05], [0.97, 0.02, 0.005, 0.005]]).log()
    rewards = t([[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    assert_close(expected_rewards(logp, rewards), t([0.45, 0.02]))
    # At the first epoch the exact term weighted by 1 / R̄_old has the gradient of log R̄ (`exact_log`):
    # d log R̄ / d logit_a = p_a (R_a - R̄) / R̄. Row 2 (a pair ordered wrong with confidence) gets
    # .97 * (0 - .02) / .02 = -.97 on its likely action instead of the reward's -.0194.
    logits = logp.clone().requires_grad_(True)
    new = torch.log_softmax(logits, -1)
    weights = 1.0 / expected_rewards(logp, rewards).clamp(min=0.01)
    (expected_action_objective(new, logp, rewards, t([0.3, 0.7]), 0.2) * weights).sum().backward()
    direct = logp.clone().requires_grad_(True)
    (torch.log_softmax(direct, -1).exp() * rewards).sum(-1).log().sum().backward()
    assert_close(logits.grad, direct.grad)
    assert logits.grad[1, 0].item() == pytest.approx(-0.97)


def test_mean_advantage_over_length_by_hand():
    # A = [2, -1], L = [2, 3] -> (2/2 + (-1)/3)/2 = (1 - 1/3)/2 = 1/3
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert_close(mean_advantage_over_length(t([2.0, -1.0]), mask), torch.tensor(1 / 3, dtype=torch.float64))


# --------------------------------------------------------------------------- editor SDE


def test_flow_sde_step_on_scalars_by_hand():
    # sigma = 0.5, sigma_next = 0.25, a = 0.5 -> dt = -0.25, std_t = 0.5 * sqrt(0.5/0.5) = 0.5
    # coef_x = 1 + 0.25/(2 * 0.5) * (-0.25) = 1 - 0.0625 = 0.9375
    # coef_v = (1 + 0.25 * 0.5/(2 * 0.5)) * (-0.25) = 1.125 * -0.25 = -0.28125
    # x = 2, v = 4: mean = 1.875 - 1.125 = 0.75; std = 0.5 * sqrt(0.25) = 0.25
    mean, std = flow_sde_step_mean(t([[2.0]]), t([[4.0]]), 0.5, 0.25, noise_level=0.5)
    assert_close(mean, t([[0.75]]))
    assert_close(std, torch.tensor(0.25, dtype=torch.float64))
    # a = 0: the Euler step of the ODE, x + v * dt = 2 - 1 = 1, std 0
    mean, std = flow_sde_step_mean(t([[2.0]]), t([[4.0]]), 0.5, 0.25, noise_level=0.0)
    assert_close(mean, t([[1.0]]))
    assert_close(std, torch.tensor(0.0, dtype=torch.float64))


def test_flow_sde_step_rejects_sigma_one_and_bad_steps():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="divides by zero"):
        flow_sde_step_mean(x, x, 1.0, 0.9, noise_level=0.7)
    with pytest.raises(ValueError, match="sigma_next < sigma"):
        flow_sde_step_mean(x, x, 0.5, 0.5, noise_level=0.7)
    with pytest.raises(ValueError, match="> 0"):
        flow_sde_step_mean(x, x, 0.0, 0.0, noise_level=0.7)
    with pytest.raises(ValueError, match="divides by zero"):
        flow_sde_step_mean(x, x, torch.tensor([[0.5], [1.0]]), 0.2, noise_level=0.7)


def test_flow_sde_step_per_sample_sigmas_equal_looped():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    v = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    sigmas, nexts = [0.9, 0.6, 0.3], [0.6, 0.3, 0.0]
    mean, std = flow_sde_step_mean(x, v, t(sigmas).view(3, 1, 1, 1), t(nexts).view(3, 1, 1, 1), 0.7)
    assert std.shape == (3, 1, 1, 1)
    for i in range(3):
        m_i, s_i = flow_sde_step_mean(x[i : i + 1], v[i : i + 1], sigmas[i], nexts[i], 0.7)
        assert_close(mean[i : i + 1], m_i)
        assert_close(std[i, 0, 0, 0], s_i)


def test_gaussian_logprob_matches_torch_normal_and_hand_value():
    # x = 1, mean = 0, std = 1: -1/2 - log sqrt(2 pi)
    assert_close(gaussian_logprob(t([[1.0]]), t([[0.0]]), 1.0), t([-0.5 - 0.5 * math.log(2 * math.pi)]))
    # x = [1, 3], mean = [0, 0], std = 2: elements -1/8 - log 2 - c and -9/8 - log 2 - c, mean:
    #   -5/8 - log 2 - c
    c = 0.5 * math.log(2 * math.pi)
    assert_close(gaussian_logprob(t([[1.0, 3.0]]), t([[0.0, 0.0]]), 2.0), t([-5 / 8 - math.log(2) - c]))
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    mu = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    expected = torch.distributions.Normal(mu, 0.7).log_prob(x).mean(dim=(1, 2))
    assert_close(gaussian_logprob(x, mu, 0.7), expected)
    std = t([0.3, 1.2]).view(2, 1, 1)
    expected = torch.distributions.Normal(mu, std.expand_as(mu)).log_prob(x).mean(dim=(1, 2))
    assert_close(gaussian_logprob(x, mu, std), expected)


def test_gaussian_kl_equal_std_by_hand_and_vs_torch():
    # mu = [1, 3], mu_ref = [0, 1], std = 2: ((1^2 + 2^2)/2) / (2 * 4) = 2.5/8 = 0.3125
    assert_close(gaussian_kl_equal_std(t([[1.0, 3.0]]), t([[0.0, 1.0]]), 2.0), t([0.3125]))
    g = torch.Generator().manual_seed(3)
    mu = torch.randn(2, 5, generator=g, dtype=torch.float64)
    mu_ref = torch.randn(2, 5, generator=g, dtype=torch.float64)
    p, q = torch.distributions.Normal(mu, 0.4), torch.distributions.Normal(mu_ref, 0.4)
    assert_close(gaussian_kl_equal_std(mu, mu_ref, 0.4), torch.distributions.kl_divergence(p, q).mean(dim=1))


def test_editor_math_runs_in_float32_for_bf16_inputs():
    # sigma = 0.9 is 0.8984375 in bfloat16; the step must not round it
    x = torch.ones(1, 4, dtype=torch.bfloat16)
    mean, std = flow_sde_step_mean(x, x, 0.9, 0.6, noise_level=0.7)
    ref_mean, ref_std = flow_sde_step_mean(x.double(), x.double(), 0.9, 0.6, noise_level=0.7)
    assert mean.dtype == torch.float32 and std.dtype == torch.float32
    assert_close(mean, ref_mean.float())  # float32 tolerance; bf16 sigmas would be off by ~1e-2
    assert_close(std, ref_std.float())
    assert gaussian_logprob(x, x, 0.5).dtype == torch.float32
    assert gaussian_kl_equal_std(x, x, 0.5).dtype == torch.float32


def test_categorical_kl_by_hand():
    # p = [.5, .5], q = [.25, .75]: .5 ln(.5/.25) + .5 ln(.5/.75) = .5 (ln 2 + ln(2/3)) = .5 ln(4/3)
    p, q = t([[0.5, 0.5]]).log(), t([[0.25, 0.75]]).log()
    assert_close(categorical_kl(p, q), t([0.5 * math.log(4 / 3)]))
    assert_close(categorical_kl(q, q), t([0.0]))
    # an outcome the policy gives probability 0 adds nothing (no 0 * -inf = nan)
    assert_close(categorical_kl(t([[0.0, 1.0]]).log(), t([[0.5, 0.5]]).log()), t([math.log(2)]))
    # the gradient pulls the policy towards the reference: d/dlogit_0 KL at p = [.5, .5], q = [.25, .75] > 0
    logits = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    categorical_kl(torch.log_softmax(logits, -1), q).sum().backward()
    assert logits.grad[0, 0] > 0 > logits.grad[0, 1]
    with pytest.raises(ValueError, match="shape"):
        categorical_kl(t([0.5, 0.5]).log(), t([0.5, 0.5]).log())
