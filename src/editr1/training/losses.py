"""Losses, rewards, advantages and log-probs: pure functions of tensors (DESIGN §6, §7).

    from editr1.training.losses import (build_sft_labels, sft_token_loss, linear_cross_entropy, gcpo_rewards,
        group_advantages, gcpo_loss, grpo_advantages, flow_sde_step_mean, gaussian_logprob)
    labels = build_sft_labels(input_ids, completion_mask)          # -100 outside the completion
    loss = sft_token_loss(logits, labels)                         # HF-style shift inside
    loss = linear_cross_entropy(hidden, head.weight, targets, w)  # the same, LM head fused, chunked
    r_w, r_l = gcpo_rewards(tau_w, tau_l)                         # [..., N] each, NaN = parse failure
    adv = torch.cat([group_advantages(r_w), group_advantages(r_l)])   # each side its own group
    loss, stats = gcpo_loss(logp_new, logp_old, logp_ref, adv, mask, clip_eps=0.2, beta=0.02)

Every function takes and returns tensors (the `stats` dicts hold Python floats for logging), has
no side effect and is tested in tests/unit/test_losses.py against values worked out by hand.
No trainer computes a loss inline (STYLE rule 2).

Conventions.
- B traces (or samples), T tokens, V vocabulary, N traces per side of a GCPO pair, G samples per
  prompt group in Flow-GRPO, P pairs.
- `mask` tensors are 0/1 (bool or float) and mark the completion tokens a loss is taken over.
- Token losses are "per-trace mean over its masked tokens, then mean over traces" (DESIGN §6):
  every trace weighs the same whatever its length.
- The Gaussian log-prob and KL of the editor are MEANS over the non-batch elements. A summed
  log-prob is `gaussian_logprob(...) * D` with D = x[0].numel(); the recipe in FINDINGS.md used the
  sum with clip 0.2, which is the mean with a clip about D times smaller.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Categorical, kl_divergence

IGNORE_INDEX = -100
"""Label value that `sft_token_loss` skips (the Hugging Face / PyTorch convention)."""

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


# --------------------------------------------------------------------------- SFT


def build_sft_labels(input_ids: Tensor, completion_mask: Tensor) -> Tensor:
    """Labels for `sft_token_loss`: the input ids inside the completion, -100 elsewhere.

    input_ids: [B, T] int64; completion_mask: [B, T] (bool or 0/1), true on the tokens the model
    must learn to write (the RRM's reasoning, JSON and `<score>`, and the end-of-turn token).
    Prompt, image and padding tokens must be false. Returns [B, T] int64, aligned with input_ids
    (NOT shifted; `sft_token_loss` shifts).
    """
    if input_ids.shape != completion_mask.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and completion_mask "
                         f"{tuple(completion_mask.shape)} must have the same shape")
    return input_ids.masked_fill(~completion_mask.bool(), IGNORE_INDEX)


def sft_token_loss(logits: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
    """Next-token cross-entropy, mean over the supervised tokens of the whole batch.

    logits: [B, T, V], the model's output for input_ids [B, T]; labels: [B, T] aligned with
    input_ids (as `build_sft_labels` makes them), -100 where there is no target. The shift happens
    here, Hugging Face style: logits[:, t] predicts labels[:, t + 1], so labels[:, 0] is never a
    target and logits[:, -1] is unused. Returns a scalar: Σ CE / (number of labels != -100) over
    the batch, i.e. token-weighted (a long completion weighs more than a short one, as in SFT
    everywhere). Computed in float32 whatever the logits' dtype.
    weights: optional [B, T] aligned with labels: then Σ w·CE / Σ w over the supervised tokens
    (a weighted mean; all ones gives the plain loss).
    Raises ValueError when no token is supervised (a data bug, not a zero loss).
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(f"expected logits [B, T, V] and labels [B, T], got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}")
    if weights is not None and weights.shape != labels.shape:
        raise ValueError(f"weights {tuple(weights.shape)} must have the labels' shape {tuple(labels.shape)}")
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    supervised = shift_labels != IGNORE_INDEX
    n_targets = int(supervised.sum())
    if n_targets == 0:
        raise ValueError("no supervised token in the batch: every shifted label is -100")
    per_token = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                                ignore_index=IGNORE_INDEX, reduction="none")  # 0 where there is no label
    if weights is None:
        return per_token.sum() / n_targets
    w = weights[:, 1:].reshape(-1).to(per_token.device, torch.float32) * supervised.reshape(-1)
    return (per_token * w).sum() / w.sum()


class _LinearCrossEntropy(torch.autograd.Function):
    """Σ w·CE(hidden @ weightᵀ, targets) / Σ w with the gradients computed chunk by chunk in the
    forward pass, so no [N, V] logits or gradient tensor is ever whole (see `linear_cross_entropy`)."""

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, token_weights: Tensor,
                chunk: int) -> Tensor:
        h, w_head = hidden.float(), weight.float()
        share = token_weights.float()
        share = share / share.sum()  # [N], sums to 1
        grad_hidden = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(w_head) if ctx.needs_input_grad[1] else None
        loss = h.new_zeros(())
        for start in range(0, h.shape[0], chunk):
            rows = slice(start, start + chunk)
            logits = h[rows] @ w_head.t()  # [C, V]
            lse = torch.logsumexp(logits, dim=-1)  # [C]
            target = targets[rows, None]
            loss += ((lse - logits.gather(1, target)[:, 0]) * share[rows]).sum()
            if grad_hidden is None and grad_weight is None:
                continue
            # d loss / d logits = share · (softmax − one-hot), built in the logits' own storage
            grad = logits.sub_(lse[:, None]).exp_()
            grad.scatter_add_(1, target, grad.new_full(target.shape, -1.0)).mul_(share[rows, None])
            if grad_hidden is not None:
                grad_hidden[rows] = grad @ w_head
            if grad_weight is not None:
                grad_weight.addmm_(grad.t(), h[rows])
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        hidden_dtype, weight_dtype = ctx.dtypes
        return (None if grad_hidden is None else (grad_hidden * grad_output).to(hidden_dtype),
                None if grad_weight is None else (grad_weight * grad_output).to(weight_dtype),
                None, None, None)


def linear_cross_entropy(hidden: Tensor, weight: Tensor, targets: Tensor, token_weights: Tensor | None = None,
                         chunk: int = 1024) -> Tensor:
    """The LM head and the next-token cross-entropy in one, for packed supervised positions.

    hidden: [N, H], the decoder's last hidden state at the N positions that predict a token;
    weight: [V, H], the LM head (no bias); targets: [N] token ids; token_weights: optional [N] ≥ 0.
    Returns a scalar, Σ w·CE / Σ w (plain mean without weights) — the value and gradients of
    ``sft_token_loss`` on the packed logits ``hidden @ weight.T``, to float rounding, in float32.
    The gradients are computed in the forward pass over row chunks of ``chunk`` and kept ([N, H]
    and [V, H]), so the [N, V] logits, softmax and their gradient never exist whole: on a CPU
    those tensors (tens of MB per SFT batch) cost more in fresh memory and zero-filling than in
    arithmetic. Call ``backward`` once per call (the gradients are precomputed).
    Raises ValueError on shape mismatches, no targets, or weights that sum to zero.
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"expected hidden [N, H] and weight [V, H], got {tuple(hidden.shape)} "
                         f"and {tuple(weight.shape)}")
    if targets.shape != hidden.shape[:1]:
        raise ValueError(f"targets {tuple(targets.shape)} must be [N] = [{hidden.shape[0]}]")
    if hidden.shape[0] == 0:
        raise ValueError("no supervised token in the batch")
    if token_weights is None:
        token_weights = hidden.new_ones(hidden.shape[0], dtype=torch.float32)
    elif token_weights.shape != targets.shape:
        raise ValueError(f"token_weights {tuple(token_weights.shape)} must have the targets' shape "
                         f"{tuple(targets.shape)}")
    if not float(token_weights.sum()) > 0:
        raise ValueError("token_weights sum to zero: no token carries loss")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return _LinearCrossEntropy.apply(hidden, weight, targets.to(hidden.device), token_weights.to(hidden.device), chunk)


# --------------------------------------------------------------------------- GCPO rewards and advantages


def gcpo_rewards(tau_w: Tensor, tau_l: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-group rewards of GCPO (DESIGN §6), batched over any leading dimensions.

    tau_w: [..., N] RRM scores of N traces on the preferred image; tau_l: [..., N] on the rejected
    one (e.g. [N] for one pair, [P, N] for P pairs). Returns (r_w, r_l), float, same shapes:
        r_w[j] = (1/N) Σ_k 1[tau_w[j] > tau_l[k]]      (strict: a tie scores 0)
        r_l[j] = (1/N) Σ_k 1[tau_l[j] < tau_w[k]]

    Parse failures arrive as NaN. The rule: **a failed trace always loses.**
    - its own reward is 0 (it wins no comparison);
    - for the other side it counts as beaten: a valid trace gets the 1/N of a comparison against a
      failed opponent (as if the failure scored -inf on the rejected side and +inf on the
      preferred side). Two failures facing each other: both 0.
    Why not the readout's numeric fallback (0)? On the rejected side a LOW score is the good one,
    so a failure read as 0 would be rewarded as the best possible trace. Why count the failed
    opponent as beaten rather than as "not won"? A failed opponent adds 1/N to every valid trace
    of the other group alike, so after `group_advantages` it changes nothing among valid traces;
    it only ranks valid traces above the failed traces of their own group, as it should.
    """
    if tau_w.shape != tau_l.shape:
        raise ValueError(f"tau_w {tuple(tau_w.shape)} and tau_l {tuple(tau_l.shape)} must have the "
                         "same shape")
    if tau_w.dim() == 0 or tau_w.shape[-1] == 0:
        raise ValueError("expected at least one trace per side: tau of shape [..., N], N >= 1")
    w = tau_w.unsqueeze(-1)  # [..., N, 1]: index j of the side being rewarded
    l = tau_l.unsqueeze(-1)
    w_opp = tau_w.unsqueeze(-2)  # [..., 1, N]: index k of the opponent
    l_opp = tau_l.unsqueeze(-2)
    # NaN compares False, so a failed trace never wins on its own; the `| isnan(opponent)` makes a
    # failed opponent a loss for it, and the `& ~isnan(self)` keeps a failed trace at 0 even then.
    wins_w = ((w > l_opp) | l_opp.isnan()) & ~w.isnan()  # [..., N, N]
    wins_l = ((l < w_opp) | w_opp.isnan()) & ~l.isnan()
    dtype = tau_w.dtype if tau_w.is_floating_point() else torch.float32
    return wins_w.to(dtype).mean(-1), wins_l.to(dtype).mean(-1)


def score_action_rewards(tau_w: Tensor, tau_l: Tensor, values: Tensor) -> Tensor:
    """The GCPO reward each possible score of a trace would get against the other side's traces.

    tau_w, tau_l: [..., N] as in `gcpo_rewards` (NaN = failed); values: [S] the scores a trace can
    write. Returns [..., 2, N, S + 1]: side 0 (preferred) gets, for score v,
    (1/N) Σ_k 1[v > tau_l[k] or tau_l[k] failed], side 1 (1/N) Σ_k 1[v < tau_w[k] or tau_w[k] failed];
    the last action (any token that is not a score: the trace fails) gets 0 — `gcpo_rewards`
    evaluated at every score the trace could have written, the rest of the trace unchanged.
    """
    v = values.to(torch.float32).view(*([1] * (tau_w.dim() + 1)), -1)  # [..., 1, 1, S]: the scores v
    opp_l = tau_l.unsqueeze(-2).unsqueeze(-1)  # [..., 1, N, 1]: the opponents k
    opp_w = tau_w.unsqueeze(-2).unsqueeze(-1)
    win_w = ((v > opp_l) | opp_l.isnan()).float().mean(-2)  # [..., 1, S]
    win_l = ((v < opp_w) | opp_w.isnan()).float().mean(-2)
    n = tau_w.shape[-1]
    sides = torch.stack([win_w.expand(*tau_w.shape[:-1], n, -1), win_l.expand(*tau_l.shape[:-1], n, -1)], dim=-3)
    return torch.cat([sides, torch.zeros_like(sides[..., :1])], dim=-1)


def expected_action_objective(logp_new: Tensor, logp_old: Tensor, rewards: Tensor, baseline: Tensor,
                              clip_eps: float) -> Tensor:
    """The PPO-clip objective of one action, its expectation over the action taken exactly.

    logp_new, logp_old: [B, K] log-probs of the K actions (new with grad); rewards: [B, K] the reward
    of each action; baseline: [B]. With A = rewards - baseline and ratio = exp(new - old), returns
    [B]: Σ_a p_old(a) · min(ratio_a A_a, clip(ratio_a, 1 - eps, 1 + eps) A_a) — the PPO surrogate
    averaged over every action the old policy could have sampled instead of the one it did.
    """
    old = logp_old.detach()
    ratio = torch.exp(logp_new - old)
    adv = (rewards - baseline.unsqueeze(-1)).detach().to(ratio.dtype)
    objective = torch.minimum(ratio * adv, torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv)
    return (old.exp() * objective).sum(-1)


def expected_rewards(logp: Tensor, rewards: Tensor) -> Tensor:
    """R̄ = Σ_a p(a) R_a: [B] the expected reward of each row's action under the policy (no grad).

    logp, rewards: [B, K] as in `expected_action_objective`.
    """
    return (logp.detach().exp() * rewards.detach().to(logp.dtype)).sum(-1)


def exact_reward_spread(logp_old: Tensor, rewards: Tensor) -> Tensor:
    """How much the exact score term can still move a trace's expected reward: Σ_a p_old(a) |R_a - R̄|
    with R̄ = Σ_a p_old(a) R_a, the policy's own expected reward.

    logp_old, rewards: [B, K] as in `expected_action_objective`. Returns [B] in [0, 1] for rewards in
    [0, 1]; 0 where every action the policy might write earns the same (a pair every score already
    orders, or none can). The signal of `policy_tokens: score_exact` even when N = 1, where the
    sampled-trace advantages of `group_advantages` are all zero by construction.
    """
    p = logp_old.detach().exp()
    r = rewards.detach().to(p.dtype)
    mean = expected_rewards(logp_old, rewards).unsqueeze(-1)
    return (p * (r - mean).abs()).sum(-1)


def group_advantages(rewards: Tensor) -> Tensor:
    """Mean-centred advantages within each group, no division by the std (GCPO, DESIGN §6).

    rewards: [..., N], one group per leading index (call it once for the preferred side and once
    for the rejected side: they are separate groups). Returns [..., N]:
    A[j] = r[j] - mean_k r[k].
    """
    return rewards - rewards.mean(dim=-1, keepdim=True)


def solved_pairs(r_w: Tensor, r_l: Tensor) -> Tensor:
    """Pairs every sampled trace already orders right: [P] bool from `gcpo_rewards`' r_w, r_l [P, N].

    True where each trace on the preferred image scores above every trace on the other (r_w all 1)
    and each trace on the other below every preferred one (r_l all 1; a failed trace has reward 0).
    Their advantages are all zero: GCPO has nothing to teach there, only something to lose
    (`gcpo.score_kl_pairs: solved` holds their scores).
    """
    return (r_w == 1).all(dim=-1) & (r_l == 1).all(dim=-1)


def grpo_advantages(rewards: Tensor, eps: float = 1e-4) -> Tensor:
    """Group-normalised advantages of Flow-GRPO (DESIGN §7).

    rewards: [..., G], one prompt group per leading index ([G] for one prompt). Returns [..., G]:
    A = (r - mean) / (std + eps) with the POPULATION std (unbiased=False, divisor G). A group whose
    rewards are all equal (std 0, including G = 1) gets exactly zero advantages: it carries no
    signal, and rounding in the mean must not turn it into noise of size 1e-16 / eps.
    Raises ValueError on a non-finite reward (the scorer must apply its fallback first).
    """
    if not bool(torch.isfinite(rewards).all()):
        raise ValueError("rewards must be finite: apply the readout's fallback before grpo_advantages")
    mean = rewards.mean(dim=-1, keepdim=True)
    std = rewards.std(dim=-1, keepdim=True, unbiased=False)
    advantages = (rewards - mean) / (std + eps)
    constant = (rewards == rewards[..., :1]).all(dim=-1, keepdim=True)
    return advantages.masked_fill(constant, 0.0)


# --------------------------------------------------------------------------- token-level policy losses


def _per_trace_mean(values: Tensor, mask: Tensor) -> Tensor:
    """[B, T] values, [B, T] mask -> [B]: mean over each trace's masked tokens."""
    mask = mask.to(values.dtype)
    lengths = mask.sum(dim=-1)
    if bool((lengths == 0).any()):
        raise ValueError("every trace needs at least one masked token (an empty trace has no mean)")
    return (values * mask).sum(dim=-1) / lengths


def _masked_token_mean(values: Tensor, mask: Tensor) -> float:
    """Mean of `values` over all masked tokens of the batch (token-weighted), as a float."""
    mask = mask.to(values.dtype)
    return float((values * mask).sum() / mask.sum())


def ppo_clip_token_loss(logp_new: Tensor, logp_old: Tensor, advantages: Tensor, mask: Tensor,
                        clip_eps: float) -> tuple[Tensor, dict[str, float]]:
    """PPO-clipped token-level policy loss (DESIGN §6; also the editor's per-step loss, T = steps).

    logp_new: [B, T] log-probs of the sampled tokens under the policy being trained (with grad);
    logp_old: [B, T] under the sampling policy (no grad needed; detached here);
    advantages: [B], one per trace, shared by its tokens; mask: [B, T], each row with >= 1 token.
    Per token, ratio = exp(logp_new - logp_old) and
        objective = min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A).
    loss = -mean over traces of (per-trace mean of the objective over its masked tokens), a scalar.
    stats (floats, token-weighted means over all masked tokens of the batch):
      clip_fraction  share of tokens where the clip is active (no gradient): A > 0 and
                     ratio > 1 + eps, or A < 0 and ratio < 1 - eps;
      ratio          mean ratio;
      approx_kl      mean of (ratio - 1) - log ratio (k3 estimate of KL(old || new));
      abs_log_ratio  mean |log ratio| (FINDINGS.md tunes the lr to keep it near 0.3).
    """
    if not clip_eps > 0:
        raise ValueError(f"clip_eps must be > 0, got {clip_eps}")
    if not (logp_new.shape == logp_old.shape == mask.shape) or advantages.shape != logp_new.shape[:1]:
        raise ValueError(f"expected logp_new, logp_old, mask [B, T] and advantages [B], got "
                         f"{tuple(logp_new.shape)}, {tuple(logp_old.shape)}, {tuple(mask.shape)}, "
                         f"{tuple(advantages.shape)}")
    log_ratio = logp_new - logp_old.detach()
    ratio = torch.exp(log_ratio)
    adv = advantages.detach().to(ratio.dtype).unsqueeze(-1)  # [B, 1]
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv
    objective = torch.minimum(unclipped, clipped)  # [B, T]
    loss = -_per_trace_mean(objective, mask).mean()
    with torch.no_grad():
        clip_active = ((adv > 0) & (ratio > 1.0 + clip_eps)) | ((adv < 0) & (ratio < 1.0 - clip_eps))
        stats = {
            "clip_fraction": _masked_token_mean(clip_active.to(ratio.dtype), mask),
            "ratio": _masked_token_mean(ratio, mask),
            "approx_kl": _masked_token_mean((ratio - 1.0) - log_ratio, mask),
            "abs_log_ratio": _masked_token_mean(log_ratio.abs(), mask),
        }
    return loss, stats


def k3_kl(logp: Tensor, logp_ref: Tensor, mask: Tensor) -> Tensor:
    """k3 estimate of KL(π || π_ref) on sampled tokens (Schulman's estimator).

    logp: [B, T] log-probs under the policy (with grad); logp_ref: [B, T] under the reference
    (detached here); mask: [B, T]. Per token, with d = logp_ref - logp:
        k3 = exp(d) - d - 1   (>= 0, zero where the two agree).
    Returns a scalar: per-trace mean over masked tokens, then mean over traces.
    """
    if not (logp.shape == logp_ref.shape == mask.shape):
        raise ValueError(f"logp, logp_ref and mask must share a shape [B, T], got {tuple(logp.shape)}, "
                         f"{tuple(logp_ref.shape)}, {tuple(mask.shape)}")
    d = logp_ref.detach() - logp
    per_token = torch.exp(d) - d - 1.0
    return _per_trace_mean(per_token, mask).mean()


def categorical_kl(logp: Tensor, logp_ref: Tensor) -> Tensor:
    """Exact KL(p || p_ref) of categorical distributions given as log-probs, one per row.

    logp: [B, K] (with grad), logp_ref: [B, K] (detached here); each row's K outcomes must cover
    every outcome (e.g. `score_action_logprobs`: the scores and, last, "any other token").
    Returns [B]: sum_k p_k (log p_k - log p_ref_k) (`torch.distributions.kl_divergence`: outcomes
    with p_k = 0 add nothing).
    """
    if logp.shape != logp_ref.shape or logp.dim() != 2:
        raise ValueError(f"logp and logp_ref must share a shape [B, K], got {tuple(logp.shape)} and "
                         f"{tuple(logp_ref.shape)}")
    return kl_divergence(Categorical(logits=logp), Categorical(logits=logp_ref.detach()))


def gcpo_loss(logp_new: Tensor, logp_old: Tensor, logp_ref: Tensor | None, advantages: Tensor,
              mask: Tensor, clip_eps: float, beta: float,
              policy_mask: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """GCPO loss (DESIGN §6) = ppo_clip_token_loss + beta * k3_kl(logp_new, logp_ref).

    policy_mask: [B, T], the tokens the policy term averages over (each row >= 1 token; default
    `mask`); the KL always covers `mask`. With only the score tokens there (`gcpo.policy_tokens:
    score`) the advantage trains the score given the trace, and the KL holds the reasoning.

    Shapes as in `ppo_clip_token_loss` (B = the 2N traces of the pairs in the batch, both sides
    together; advantages from `group_advantages` per side). logp_ref: [B, T] under the SFT
    reference, or None when there is no reference (then beta must be 0).
    - beta == 0, logp_ref None: no KL term, no "kl" stat.
    - beta == 0, logp_ref given: no KL term, but "kl" is reported (for monitoring).
    - beta > 0, logp_ref None: ValueError (a KL anchor was asked for and cannot be computed).
    stats: those of ppo_clip_token_loss plus "policy_loss", and "kl" when logp_ref is given.
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta > 0 and logp_ref is None:
        raise ValueError(f"beta = {beta} > 0 needs logp_ref (the reference model's log-probs)")
    policy_mask = mask if policy_mask is None else policy_mask
    policy_loss, stats = ppo_clip_token_loss(logp_new, logp_old, advantages, policy_mask, clip_eps)
    stats["policy_loss"] = float(policy_loss.detach())
    loss = policy_loss
    if logp_ref is not None:
        if beta > 0:
            kl = k3_kl(logp_new, logp_ref, mask)
            loss = policy_loss + beta * kl
            stats["kl"] = float(kl.detach())
        else:
            with torch.no_grad():
                stats["kl"] = float(k3_kl(logp_new, logp_ref, mask))
    return loss, stats


def mean_advantage_over_length(advantages: Tensor, mask: Tensor) -> Tensor:
    """The paper's length-bias diagnostic: mean_i (A_i / L_i), a scalar.

    advantages: [B]; mask: [B, T], L_i = number of masked tokens of trace i (>= 1). Positive when
    short traces get the positive advantages (the per-trace mean then pushes towards short outputs).
    """
    if advantages.shape != mask.shape[:1]:
        raise ValueError(f"expected advantages [B] and mask [B, T], got {tuple(advantages.shape)} "
                         f"and {tuple(mask.shape)}")
    lengths = mask.to(advantages.dtype if advantages.is_floating_point() else torch.float32).sum(dim=-1)
    if bool((lengths == 0).any()):
        raise ValueError("every trace needs at least one masked token")
    return (advantages / lengths).mean()


# --------------------------------------------------------------------------- editor: flow SDE (DESIGN §7)


def _at_least_float32(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _check_sigmas(sigma: float | Tensor, sigma_next: float | Tensor) -> None:
    s = torch.as_tensor(sigma)
    s_next = torch.as_tensor(sigma_next)
    if bool((s >= 1).any()):
        raise ValueError("sigma must be < 1: the SDE std a*sqrt(sigma/(1-sigma)) divides by zero at "
                         "sigma = 1 (start the noisy steps at the second sigma)")
    if bool((s <= 0).any()):
        raise ValueError("sigma must be > 0: the SDE step divides by sigma")
    if bool((s_next >= s).any()) or bool((s_next < 0).any()):
        raise ValueError("need 0 <= sigma_next < sigma (the step dt = sigma_next - sigma is negative)")


def flow_sde_step_mean(x: Tensor, v: Tensor, sigma: float | Tensor, sigma_next: float | Tensor,
                       noise_level: float) -> tuple[Tensor, Tensor]:
    """Mean and std of one flow-matching SDE step (Flow-GRPO, DESIGN §7).

    x: [B, ...] the sample at sigma (1 = noise); v: [B, ...] the predicted velocity (same shape);
    sigma, sigma_next: floats, or tensors broadcastable against x (per-sample sigmas must be shaped
    [B, 1, ..., 1]); 0 < sigma < 1 and 0 <= sigma_next < sigma; noise_level: a >= 0.
        dt = sigma_next - sigma (< 0),  std_t = a * sqrt(sigma / (1 - sigma)),
        mean = x * (1 + std_t^2 / (2 sigma) * dt) + v * (1 + std_t^2 * (1 - sigma) / (2 sigma)) * dt.
    Returns (mean [B, ...], std) with std = std_t * sqrt(-dt) as a tensor (0-dim for float sigmas,
    else the broadcast shape of the sigmas). The next sample is x_next = mean + std * noise;
    a = 0 gives the deterministic Euler step mean = x + v * dt, std = 0.
    Computed in float32 at least (bf16 inputs give float32 outputs: a bf16 sigma of 0.9 is 0.898).
    Raises ValueError for sigma >= 1 (division by zero, FINDINGS.md), sigma <= 0 or a bad step.
    """
    if x.shape != v.shape:
        raise ValueError(f"x {tuple(x.shape)} and v {tuple(v.shape)} must have the same shape")
    if noise_level < 0:
        raise ValueError(f"noise_level must be >= 0, got {noise_level}")
    _check_sigmas(sigma, sigma_next)
    dtype = _at_least_float32(x.dtype)
    x, v = x.to(dtype), v.to(dtype)
    sigma_t = torch.as_tensor(sigma, dtype=dtype, device=x.device)
    sigma_next_t = torch.as_tensor(sigma_next, dtype=dtype, device=x.device)
    dt = sigma_next_t - sigma_t
    std_t = noise_level * torch.sqrt(sigma_t / (1.0 - sigma_t))
    var_t = std_t**2
    coef_x = 1.0 + var_t / (2.0 * sigma_t) * dt
    coef_v = (1.0 + var_t * (1.0 - sigma_t) / (2.0 * sigma_t)) * dt
    mean = x * coef_x + v * coef_v
    return mean, std_t * torch.sqrt(-dt)


def gaussian_logprob(x: Tensor, mean: Tensor, std: float | Tensor) -> Tensor:
    """Gaussian log-density of x under N(mean, std^2), MEAN over the non-batch elements.

    x, mean: [B, ...] (same shape; pass x detached, as the sample is data); std: a float or a
    tensor broadcastable against x (the step std of `flow_sde_step_mean`, > 0). Returns [B]:
        mean_e [ -(x - mean)^2 / (2 std^2) - log std - log sqrt(2 pi) ].
    Multiply by x[0].numel() for the summed log-density. Computed in float32 at least.
    """
    if x.shape != mean.shape or x.dim() < 1:
        raise ValueError(f"x {tuple(x.shape)} and mean {tuple(mean.shape)} must share a shape [B, ...]")
    dtype = _at_least_float32(torch.promote_types(x.dtype, mean.dtype))
    x, mean = x.to(dtype), mean.to(dtype)
    std_t = torch.as_tensor(std, dtype=dtype, device=mean.device)
    if bool((std_t <= 0).any()):
        raise ValueError("std must be > 0 (a deterministic step has no log-prob)")
    per_element = -((x - mean) ** 2) / (2.0 * std_t**2) - torch.log(std_t) - _LOG_SQRT_2PI
    if per_element.shape != x.shape:
        raise ValueError(f"std {tuple(std_t.shape)} must broadcast against x {tuple(x.shape)}")
    return per_element.reshape(x.shape[0], -1).mean(dim=-1)


def gaussian_kl_equal_std(mu: Tensor, mu_ref: Tensor, std: float | Tensor) -> Tensor:
    """KL(N(mu, std^2) || N(mu_ref, std^2)) per sample, MEAN over the non-batch elements.

    mu, mu_ref: [B, ...] (mu_ref detached here); std: float or tensor broadcastable against mu
    (> 0). Returns [B]: mean_e (mu - mu_ref)^2 / (2 std^2) — the mean matches `gaussian_logprob`,
    so the KL and the log-ratio live on the same per-element scale (DESIGN §7 writes the sum).
    Computed in float32 at least.
    """
    if mu.shape != mu_ref.shape or mu.dim() < 1:
        raise ValueError(f"mu {tuple(mu.shape)} and mu_ref {tuple(mu_ref.shape)} must share a shape [B, ...]")
    dtype = _at_least_float32(torch.promote_types(mu.dtype, mu_ref.dtype))
    mu, mu_ref = mu.to(dtype), mu_ref.to(dtype)
    std_t = torch.as_tensor(std, dtype=dtype, device=mu.device)
    if bool((std_t <= 0).any()):
        raise ValueError("std must be > 0")
    per_element = (mu - mu_ref.detach()) ** 2 / (2.0 * std_t**2)
    if per_element.shape != mu.shape:
        raise ValueError(f"std {tuple(std_t.shape)} must broadcast against mu {tuple(mu.shape)}")
    return per_element.reshape(mu.shape[0], -1).mean(dim=-1)
