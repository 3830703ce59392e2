"""The `gcpo` stage's settings (params.yaml `gcpo`).

    from editr1.training.gcpo_config import GCPOConfig
"""

from __future__ import annotations

from dataclasses import dataclass, field

from editr1.training.rollout import READOUTS

POLICY_TOKENS = ("all", "score", "score_exact")
SCHEDULES, SCORE_KL_PAIRS = ("constant", "linear"), ("all", "solved")


@dataclass(frozen=True)
class GCPOConfig:
    """The `gcpo` stage: sampling, the PPO update, batch composition, run length, evaluation, checkpoints."""

    n_samples: int = field(default=8, metadata={"help": "N: traces sampled per side (image) of each pair."})
    temperature: float = field(
        default=1.0, metadata={"help": "T: sampling temperature; log-probs (old, new, reference) are taken at T too."})
    clip_eps: float = field(default=0.2, metadata={"help": "ε of the PPO clip on the per-token ratio."})
    beta: float = field(
        default=0.04,
        metadata={"help": "β of the k3 KL to the frozen SFT model; 0 disables it and skips the reference forward. "
                  "0.04 keeps the SFT format (parse rate 1.00 vs 0.69 at 0; README: GCPO)."})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate (the peak, after the warm-up)."})
    schedule: str = field(
        default="constant",
        metadata={"help": "lr after the warm-up: 'constant', or 'linear' down to 0 at the run's end (progress = "
                          "max(step / max_steps, seconds / max_seconds), as in sft)."})
    warmup_steps: int = field(
        default=10,
        metadata={"help": "Linear lr warm-up over this many GCPO steps (0 = none). A fresh Adam's first step moves "
                          "every weight by about lr whatever its gradient: on a converged SFT model at lr 1e-3 "
                          "that one step changed the sampled tokens' log-probs by ~40 nats per token (k3 KL)."})
    inner_epochs: int = field(default=2, metadata={"help": "μ: PPO epochs (optimizer steps) per batch of traces."})
    pairs_per_step: int = field(default=8, metadata={"help": "Human pairs per step (2 N traces each)."})
    max_steps: int = field(default=0, metadata={"help": "Steps (rollout + update) to run; 0 = no step limit."})
    max_seconds: float = field(
        default=120.0,
        metadata={"help": "Wall-clock budget of the training steps (rollouts + updates; evaluation and checkpoints "
                          "not counted, as in sft); 0 = none. Resume is exact only with max_steps."})
    tau_readout: str = field(
        default="parsed",
        metadata={"help": "τ of a trace: 'parsed' (the number written in <score>: the score the policy samples is "
                          "the action rewarded) or 'expected' (probability-weighted score after <score>, nearly no "
                          "ties, but a function of the reasoning only; README: GCPO from the full profile's SFT model)."})
    policy_tokens: str = field(
        default="all",
        metadata={"help": "Tokens the policy-gradient term averages a trace's advantage over: 'all' (DESIGN §6), "
                          "'score' (those after the trace's last <score>; unparsed traces keep all) or "
                          "'score_exact' (the score token only, its PPO surrogate averaged exactly over every score "
                          "the trace could have written; needs tau_readout parsed). The KL covers all tokens."})
    score_kl: float = field(
        default=0.0,
        metadata={"help": "With policy_tokens score_exact: weight of the exact KL between the policy's and the SFT "
                          "model's distributions over each trace's score (0 = off). The k3 KL averages over a "
                          "trace's ~120 tokens, so it hardly holds the one token score_exact trains."})
    exact_log: float = field(
        default=0.0,
        metadata={"help": "With policy_tokens score_exact: > 0 maximizes the log of each trace's expected reward "
                          "instead of the reward itself — its exact term weighted by 1 / max(R̄, exact_log), R̄ = "
                          "Σ_v p(v) R(v) under the sampling policy — so a pair the policy orders wrong with "
                          "confidence keeps its gradient (the reward's vanishes with p of the winning scores); "
                          "0 = off (DESIGN §6's reward)."})
    score_kl_pairs: str = field(default="all", metadata={"help": "Pairs score_kl holds: 'all', or 'solved' (every "
                                                         "sampled score of the better image above every other)."})
    stratify: bool = field(
        default=True,
        metadata={"help": "Stratify batches over pair kinds (every kind at its share, disagreement kinds "
                          "oversampled); false = uniform over pairs."})
    oversample_disagreement: float = field(
        default=3.0, metadata={"help": "Weight multiplier of the disagreement kinds in the stratified sampler."})
    disagreement_threshold: float = field(
        default=0.5,
        metadata={"help": "A kind is a disagreement kind when the teacher's trajectories order its train pairs "
                          "like the annotators less than this share of the time (ties count as wrong)."})
    disagreement_min_pairs: int = field(
        default=20,
        metadata={"help": "Kinds with fewer teacher-scored train pairs are never flagged (a few pairs carry "
                          "labels that annotator noise reversed)."})
    max_new_tokens: int = field(
        default=0,
        metadata={"help": "Generation budget per trace; 0 = auto: 1.25 x the longest train trajectory in the model's "
                          "tokens (a runaway trace is cut, scores NaN and loses, instead of holding the whole "
                          "batch's decoding for hundreds of steps)."})
    checkpoint_every: int = field(default=20, metadata={"help": "Checkpoint every this many steps (0 = never)."})
    keep_checkpoints: int = field(default=2, metadata={"help": "Newest checkpoints kept."})
    eval_every: int = field(
        default=0, metadata={"help": "Evaluate on val every this many steps (0 = only at the end)."})
    eval_pairs: int = field(default=128, metadata={"help": "Non-tie val pairs scored (greedy) per evaluation; 0 = none."})
    eval_batch_size: int = field(default=32, metadata={"help": "Items per generation batch when evaluating."})
    average_tail: float = field(
        default=0.0,
        metadata={"help": "Hand on the uniform mean of the weights after every step of the run's last "
                          "average_tail share of its budget (Polyak / SWA-style; RL steps are noisy) instead of "
                          "the last weights; 0 = off. The control gets the same (`editr1.training.selection`)."})
    select_points: int = field(
        default=0,
        metadata={"help": "Model selection: evaluate on the val pairs at this many evenly spaced points of the "
                          "budget (the last at its end) and write the best one's weights as out/model; 0 = off "
                          "(the last weights). The control gets the same points (`editr1.training.selection`)."})
    select_start: bool = field(
        default=False, metadata={"help": "With select_points: the start (SFT) model is a candidate too."})
    seed: int = field(default=0, metadata={"help": "Seed of the pair order and of the sampling seeds."})
    threads: int = field(default=1, metadata={"help": "torch CPU threads (1 is fastest for tiny models here)."})
    device: str = field(default="cpu", metadata={"help": "torch device (cpu, cuda, cuda:1…)."})
    compile: bool = field(
        default=False,
        metadata={"help": "torch.compile the policy's decoder layers (`editr1.training.forward.compile_decoder`; "
                          "sampling and the update both use them); compiling counts against max_seconds."})
    grad_clip: float = field(default=1.0, metadata={"help": "Max global gradient norm (0 = no clipping)."})
    sft_mix: float = field(
        default=0.0, metadata={"help": "Weight of SFT's token loss on a batch of accepted cold-start trajectories "
                                       "added to every update (PPO-ptx; `editr1.training.sft_mix`); 0 = off."})
    sft_mix_batch: int = field(default=16, metadata={"help": "Trajectories per step in the sft_mix loss."})
    sft_mix_verdicts: float = field(default=1.0, metadata={"help": "Weight of the verdicts (yes/no, JSON list, score) "
                                                           "in sft_mix; 0 = hold only descriptions and findings."})
    skip_zero_advantage: bool = field(
        default=False,
        metadata={"help": "Leave the traces of groups whose advantages are all zero out of the update (they add "
                          "no policy gradient but dilute the per-trace mean and cost a forward)."})

    def __post_init__(self) -> None:
        if self.tau_readout not in READOUTS:
            raise ValueError(f"gcpo.tau_readout must be one of {READOUTS}, got {self.tau_readout!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"gcpo.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.policy_tokens not in POLICY_TOKENS:
            raise ValueError(f"gcpo.policy_tokens must be one of {POLICY_TOKENS}, got {self.policy_tokens!r}")
        if self.policy_tokens == "score_exact" and (self.tau_readout != "parsed" or self.skip_zero_advantage):
            raise ValueError("gcpo.policy_tokens score_exact scores the written number: it needs tau_readout parsed "
                             "and skip_zero_advantage false (a tied group still has exact signal)")
        if self.score_kl < 0 or (self.score_kl > 0 and self.policy_tokens != "score_exact") or \
                self.score_kl_pairs not in SCORE_KL_PAIRS:
            raise ValueError(f"gcpo.score_kl must be >= 0, and > 0 only with policy_tokens score_exact; "
                             f"score_kl_pairs one of {SCORE_KL_PAIRS}")
        if self.max_steps <= 0 and self.max_seconds <= 0:
            raise ValueError("gcpo: set max_steps or max_seconds (both 0 would never stop)")
        if min(self.n_samples, self.inner_epochs, self.pairs_per_step, self.threads) < 1 or \
                min(self.max_new_tokens, self.warmup_steps) < 0:
            raise ValueError("gcpo.n_samples, inner_epochs, pairs_per_step, threads must be >= 1, "
                             "max_new_tokens and warmup_steps >= 0")
        if self.temperature <= 0 or self.clip_eps <= 0 or self.beta < 0 or self.lr <= 0:
            raise ValueError("gcpo: need temperature > 0, clip_eps > 0, beta >= 0, lr > 0")
        if min(self.sft_mix, self.sft_mix_verdicts) < 0 or self.sft_mix_batch < 1:
            raise ValueError("gcpo.sft_mix and sft_mix_verdicts must be >= 0, gcpo.sft_mix_batch >= 1")
        if not 0.0 <= self.average_tail <= 1.0:
            raise ValueError(f"gcpo.average_tail must be in [0, 1], got {self.average_tail}")
        if self.select_points < 0 or (self.select_points > 0 and self.eval_pairs <= 0):
            raise ValueError("gcpo.select_points must be >= 0, and > 0 only with eval_pairs > 0")
        if not 0.0 <= self.exact_log <= 1.0 or (self.exact_log > 0 and self.policy_tokens != "score_exact"):
            raise ValueError(f"gcpo.exact_log must be in [0, 1], and > 0 only with policy_tokens score_exact, "
                             f"got {self.exact_log}")
        if self.oversample_disagreement <= 0:
            raise ValueError("gcpo.oversample_disagreement must be > 0")


# Fields that may change between a checkpoint and its resumption without changing the run.
RUN_FIELDS = {"max_steps", "max_seconds", "eval_every", "eval_pairs", "eval_batch_size", "checkpoint_every",
              "keep_checkpoints", "threads", "device"}
