"""The `gcpo` stage: reinforce the SFT reasoning reward model with pairwise human labels (DESIGN §6).

    from editr1.training.gcpo import GCPOConfig, run_gcpo
    metrics = run_gcpo(GCPOConfig(), storage, Path("runs/sft/model"), storage / "rrm/trajectories.parquet",
                       storage / "rrm/principles.parquet", Path("runs/gcpo"))

Each step draws `pairs_per_step` non-tie human train pairs, samples N traces on each image with the current
policy (`editr1.training.rollout`), turns the cross-group comparisons of their scores τ into rewards and
mean-centred advantages (`editr1.training.losses`: `gcpo_rewards` with its NaN rule, `group_advantages`
per side), and takes `inner_epochs` PPO-clip steps on the 2N traces of each pair (`gcpo_loss`, + β·k3 KL
to the frozen SFT model when β > 0); the lr follows `schedule`.

Which pairs (FINDINGS.md, "GCPO can fix the teacher's bias"): GCPO can only add what the SFT data lacks —
the orderings where the teacher and the annotators disagree. With `stratify`, batches are stratified over
pair kinds (`editr1.training.stratify`; the world's "correct>extra_change", or the category for data
without world truth), every kind at its natural share, and the kinds the teacher orders wrongly on the
train pairs — measured from the cold-start trajectories, never hard-coded — weighted
`oversample_disagreement` times more.

Which readout and which tokens (README, "GCPO from the full profile's SFT model"): with `tau_readout: parsed`
the score a trace writes is the action rewarded; under `expected` τ depends on the reasoning only, so GCPO
can move it only by changing what the trace says. `policy_tokens` narrows the policy term to the score
tokens (`score`) or replaces it, for every trace that parsed, by the exact expectation over the scores it
could have written (`score_exact`, `rollout.ExactScore`); the KL to the SFT model covers every token.

Checkpoints every `checkpoint_every` steps under out/checkpoints/ (model, optimizer, sampler, RNG, history)
and resumes exactly: the sampling seed of step s is derived from (seed, s), so a resumed run draws the same
traces as an uninterrupted one (when max_steps sets its length; a max_seconds budget depends on the
machine's speed). Writes out/model/ (`save_rrm`) and out/metrics.json (history, val evaluations, final metrics);
out/model is the last weights, or with `average_tail` their tail average and with `select_points` the best val
evaluation's (`editr1.training.selection`).

From a shell (`gcpo` section of params.yaml, with overrides)::

    python -m editr1.training.gcpo --storage storage/demo --sft-model runs/sft/model --out runs/gcpo \\
        --set max_seconds=120
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from editr1.coldstart import load_principles, load_trajectories
from editr1.evaluation.rrm_eval import headline, pair_kinds, rrm_metrics, score_pairs
from editr1.lake.catalog import curated_pairs
from editr1.lake.images import ImageLoader
from editr1.lake.objects import open_object_store
from editr1.models.processor import RRMProcessor
from editr1.models.rrm import load_rrm, save_rrm
from editr1.rrm.items import Context, Quadruple
from editr1.training.checkpoint import (ResumableSampler, capture_rng, latest_checkpoint, load_checkpoint, restore_rng,
                                       save_checkpoint)
from editr1.training.forward import compile_decoder
from editr1.training.gcpo_config import RUN_FIELDS, GCPOConfig
from editr1.training.optim import run_progress
from editr1.training.losses import (categorical_kl, expected_action_objective, gcpo_loss, gcpo_rewards,
                                    group_advantages, mean_advantage_over_length, solved_pairs)
from editr1.training.rollout import (ExactScore, Rollout, generation_budget, rollout_stats, sample_rollout,
                                     score_action_logprobs, score_token_mask, score_traces, select_groups, step_seed,
                                     token_logprobs)
from editr1.training.selection import BestWeights, TailAverage, hand_on, val_pairs
from editr1.training.sft_mix import SFTMix
from editr1.training.stratify import PairKindSampler, disagreement_kinds, kind_weights, teacher_accuracy
from editr1.world.truth import WorldTruth

log = logging.getLogger(__name__)


def gcpo_update(model: torch.nn.Module, processor: RRMProcessor, optimizer: torch.optim.Optimizer, rollout: Rollout,
                cfg: GCPOConfig, mix: Callable[[], torch.Tensor] | None = None
                ) -> tuple[dict[str, float], torch.Tensor]:
    """Rewards, advantages and `cfg.inner_epochs` PPO-clip steps on one rollout (DESIGN §6).

    The first epoch's forward (`score_traces`) gives τ and, detached, the old log-probs; rewards come from
    `gcpo_rewards` (NaN rule: a trace without a score always loses), advantages from `group_advantages` per
    side; each epoch is one optimizer step on `gcpo_loss` over the kept traces (all, or with
    `skip_zero_advantage` those of groups with a non-zero advantage). Returns (stats of the step,
    groups_zero [P, 2] bool: groups whose advantages are all zero). When every group is zero and
    skip_zero_advantage is set, no step is taken (stats "updated" 0). `mix` adds cfg.sft_mix × its loss to each epoch.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    n = rollout.n_samples
    epoch_stats: list[dict[str, float]] = []
    grad_norms: list[float] = []
    sub = rollout
    for epoch in range(cfg.inner_epochs):
        optimizer.zero_grad(set_to_none=True)
        if epoch == 0:
            scored = score_traces(model, processor, rollout, cfg.tau_readout)
            logp_old = scored.logp.detach()
            r_w, r_l = gcpo_rewards(scored.tau[:, 0], scored.tau[:, 1])  # [P, N] each
            advantages = torch.stack([group_advantages(r_w), group_advantages(r_l)], dim=1)  # [P, 2, N]
            groups_zero = (advantages == 0).all(dim=-1)  # [P, 2]
            solved = solved_pairs(r_w, r_l)[:, None, None].expand(advantages.shape).reshape(-1)  # rows
            flat_adv = advantages.reshape(-1).to(logp_old.device)  # the rollout's row order
            kept = [g for g, zero in enumerate(groups_zero.reshape(-1).tolist())
                    if not (zero and cfg.skip_zero_advantage)]
            info = rollout_stats(rollout, scored.tau, r_w, r_l, advantages, groups_zero)
            info["traces_in_update"] = float(len(kept) * n)
            if not kept:
                break  # every group tied: no signal, no step
            logp, old, adv = scored.logp, logp_old, flat_adv
            if len(kept) < groups_zero.numel():
                sub = select_groups(processor, rollout, kept)
                rows = [g * n + j for g in kept for j in range(n)]
                length = sub.completion_ids.shape[1]
                logp, old, adv = logp[rows, :length], old[rows, :length], adv[rows]
            # the same traces every epoch: the policy term's tokens are found once
            policy_mask = score_token_mask(processor, sub) if cfg.policy_tokens == "score" else None
            if cfg.policy_tokens == "score_exact":
                exact = ExactScore.of(model, processor, rollout, scored, r_w, r_l, log_floor=cfg.exact_log)
                adv = adv.masked_fill(exact.rows.to(adv.device), 0.0)  # their policy term is the exact one
                info.update(exact.stats())
        else:
            logp, hidden = token_logprobs(model, sub)
            if cfg.policy_tokens == "score_exact":
                exact.logp = score_action_logprobs(model, processor, sub, hidden)[0]
        loss, stats = gcpo_loss(logp, old, sub.logp_ref, adv, sub.completion_mask, cfg.clip_eps, cfg.beta,
                                policy_mask)
        if cfg.policy_tokens == "score_exact":
            objective = expected_action_objective(exact.logp, exact.logp_old, exact.rewards, exact.baseline,
                                                  cfg.clip_eps)
            exact_rows = exact.rows.to(objective.device)
            loss = loss - (objective * exact.weights * exact_rows).sum() / objective.shape[0]
            if cfg.score_kl > 0:
                held = exact_rows & solved.to(exact_rows.device) if cfg.score_kl_pairs == "solved" else exact_rows
                score_kl = (categorical_kl(exact.logp, sub.score_logp_ref) * held).sum() / objective.shape[0]
                loss = loss + cfg.score_kl * score_kl
                stats["score_kl"] = float(score_kl.detach())
        if mix is not None:  # cfg.sft_mix × SFT's token loss on this step's trajectories (`SFTMix`)
            stats["sft_mix_loss"] = float((mix_loss := mix()).detach())
            loss = loss + cfg.sft_mix * mix_loss
        loss.backward()
        if cfg.grad_clip > 0:
            grad_norms.append(float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)))
        optimizer.step()
        stats["loss"] = float(loss.detach())
        epoch_stats.append(stats)
    info["updated"] = float(bool(epoch_stats))
    if epoch_stats:
        first, last = epoch_stats[0], epoch_stats[-1]
        info.update({"loss": first["loss"], "policy_loss": first["policy_loss"],
                     # the ratio only moves after the first epoch: clip and KL stats of the last one
                     "clip_fraction": last["clip_fraction"], "approx_kl": last["approx_kl"],
                     "abs_log_ratio": last["abs_log_ratio"], "ratio": last["ratio"],
                     "mean_adv_over_len": float(mean_advantage_over_length(adv.cpu(), sub.completion_mask.cpu()))})
        for key in ("kl", "score_kl", "sft_mix_loss"):
            if key in first:
                info[key] = first[key]
        if grad_norms:
            info["grad_norm"] = grad_norms[0]
    return info, groups_zero


@dataclass
class PairBatch:
    """The pairs of one step: indices into the train pairs, their kinds and their quadruples."""

    indices: list[int]
    kinds: list[str]
    quads: list[tuple[Quadruple, Quadruple]]


class GCPOTrainer:
    """setup → train → finish; `step_once` is one rollout + update.

        trainer = GCPOTrainer(cfg, storage, sft_model, trajectories, principles, out)
        trainer.setup(resume=True)
        trainer.train()
        metrics = trainer.finish()
    """

    def __init__(self, cfg: GCPOConfig, storage: Path, sft_model: Path, trajectories: Path, principles: Path,
                 out: Path):
        self.cfg = cfg
        self.storage = Path(storage)
        self.sft_model = Path(sft_model)
        self.trajectories_path = Path(trajectories)
        self.principles_path = Path(principles)
        self.out = Path(out)
        self.checkpoint_dir = self.out / "checkpoints"
        self.step = 0
        self.train_seconds = 0.0
        self.history: list[dict[str, Any]] = []
        self.evaluations: list[dict[str, Any]] = []
        self.last_metrics: dict[str, Any] | None = None
        self.resumed_from: str | None = None
        self.best = BestWeights(cfg.select_points, cfg.select_start)
        self.average = TailAverage(cfg.average_tail)

    # ------------------------------------------------------------------ setup

    def setup(self, resume: bool = True) -> None:
        """Load pairs, kinds, teacher agreement, models, optimizer and sampler; resume if asked."""
        cfg = self.cfg
        torch.set_num_threads(cfg.threads)
        self.out.mkdir(parents=True, exist_ok=True)
        self.images = ImageLoader(open_object_store("", self.storage), capacity=1 << 16)
        self.checklists = load_principles(self.principles_path)
        truth = WorldTruth.from_lake(self.storage)
        # Ties carry no GCPO signal (DESIGN §6); pairs whose context has no checklist cannot be judged.
        self.train_pairs = [p for p in curated_pairs(self.storage, "train", include_ties=False).to_pylist()
                            if p["context_id"] in self.checklists]
        if not self.train_pairs:
            raise ValueError(f"{self.storage}: no non-tie train pairs with principles")
        self.kinds = self._kinds(self.train_pairs, truth)
        self.val_pairs = val_pairs(self.storage, self.checklists, cfg.eval_pairs)
        self.val_kinds = self._kinds(self.val_pairs, truth)

        trajectories = load_trajectories(self.trajectories_path, accepted_only=False, split="train")
        teacher = {(r["context_id"], r["edited_sha"]): r["score"] for r in trajectories if r["score"] is not None}
        trajectory_texts = [r["text"] for r in trajectories if r["accepted"]]
        self.teacher_accuracy = teacher_accuracy(self.train_pairs, self.kinds, teacher)
        self.flagged = disagreement_kinds(self.train_pairs, self.kinds, teacher, cfg.disagreement_threshold,
                                          cfg.disagreement_min_pairs)
        log.info("disagreement kinds (teacher right < %.2f): %s", cfg.disagreement_threshold, sorted(self.flagged))
        if cfg.stratify:
            self.weights = kind_weights(self.kinds, self.flagged, cfg.oversample_disagreement)
            self.sampler: PairKindSampler | ResumableSampler = PairKindSampler(self.kinds, self.weights, cfg.seed)
        else:
            self.weights = dict(Counter(self.kinds))
            n = len(self.train_pairs)
            self.sampler = ResumableSampler(n, cfg.seed, min(cfg.pairs_per_step, n), drop_last=True)

        self.model, self.processor = load_rrm(self.sft_model, device=cfg.device)
        self.model.eval()  # no dropout in RL: the first PPO ratio must be exactly 1
        if cfg.compile:
            compile_decoder(self.model)
        self.max_new_tokens = cfg.max_new_tokens or generation_budget(self.processor, trajectory_texts)
        self.reference = None
        if cfg.beta > 0 or cfg.score_kl > 0:
            self.reference, _ = load_rrm(self.sft_model, device=cfg.device)
            self.reference.requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=0.0)
        self.mix = SFTMix([r for r in trajectories if r["accepted"]], self.images, self.processor, cfg.sft_mix_batch,
                          cfg.seed, cfg.sft_mix_verdicts) if cfg.sft_mix > 0 else None
        torch.manual_seed(cfg.seed)
        checkpoint = latest_checkpoint(self.checkpoint_dir) if resume else None
        if checkpoint is not None:
            self.resume(checkpoint)
        elif self.best.start:
            self.select(self.evaluate())

    @staticmethod
    def _kinds(pairs: Sequence[dict[str, Any]], truth: WorldTruth) -> list[str]:
        """World pair kinds where the truth knows both images, else the category."""
        return [kind if kind is not None else (pair.get("category") or "unknown")
                for pair, kind in zip(pairs, pair_kinds(pairs, truth))]

    def quadruples(self, pair: dict[str, Any]) -> tuple[Quadruple, Quadruple]:
        """(chosen, rejected) quadruples of a curated pair row."""
        cid = pair["context_id"]
        context = Context(cid, pair["instruction"], self.images(pair["source_sha"]), pair["source_sha"],
                          pair.get("category"))
        principles = tuple(self.checklists[cid])
        return (Quadruple(context, self.images(pair["chosen_sha"]), principles, pair["chosen_sha"]),
                Quadruple(context, self.images(pair["rejected_sha"]), principles, pair["rejected_sha"]))

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, Any]:
        """Everything an exact resume needs."""
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.state_dict(), "rng": capture_rng(), "step": self.step,
            "train_seconds": self.train_seconds, "history": self.history, "evaluations": self.evaluations,
            "best": self.best.state_dict(), "average": self.average.state_dict(),
            "config": dataclasses.asdict(self.cfg),
        }

    def save_checkpoint(self) -> Path:
        return save_checkpoint(self.checkpoint_dir, self.step, self.state(), keep=self.cfg.keep_checkpoints)

    def resume(self, path: Path) -> None:
        """Restore model, optimizer, sampler, history and RNG (last) from checkpoint `path`."""
        state = load_checkpoint(path)
        defaults = {f.name: f.default for f in dataclasses.fields(GCPOConfig)}  # a field newer than the checkpoint
        changed = sorted(k for k, v in dataclasses.asdict(self.cfg).items()
                         if k not in RUN_FIELDS and state["config"].get(k, defaults[k]) != v)
        if changed:
            raise ValueError(f"checkpoint {path} was made with different settings {changed}: "
                             "use another out directory or resume=False")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        self.step = state["step"]
        self.train_seconds = state["train_seconds"]
        self.history = state["history"]
        self.evaluations = state["evaluations"]
        self.best.load_state_dict(state.get("best"))
        self.average.load_state_dict(state.get("average"))
        restore_rng(state["rng"])
        self.resumed_from = str(path)
        log.info("resumed from %s at step %d", path, self.step)

    # ------------------------------------------------------------------ one step

    def next_pairs(self) -> PairBatch:
        """The pairs of the next step (advances the sampler)."""
        if isinstance(self.sampler, PairKindSampler):
            indices = self.sampler.next_batch(self.cfg.pairs_per_step)
        else:
            indices = self.sampler.next_batch()
        return PairBatch(indices, [self.kinds[i] for i in indices],
                         [self.quadruples(self.train_pairs[i]) for i in indices])

    def rollout(self, batch: PairBatch) -> Rollout:
        cfg = self.cfg
        return sample_rollout(self.model, self.processor, batch.quads, n_samples=cfg.n_samples,
                              temperature=cfg.temperature, max_new_tokens=self.max_new_tokens,
                              seed=step_seed(cfg.seed, self.step), reference=self.reference,
                              reference_scores=cfg.score_kl > 0)

    def learning_rate(self) -> float:
        """The lr of the current step: warm-up over `warmup_steps`, then constant or (`schedule: linear`) down to 0
        with the run's progress; a function of the checkpointed step and seconds, so no scheduler state."""
        cfg = self.cfg
        lr = cfg.lr * min(1.0, (self.step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else cfg.lr
        if cfg.schedule == "linear":
            lr *= 1.0 - run_progress(self.step, self.train_seconds, cfg.max_steps, cfg.max_seconds)
        return lr

    def update(self, rollout: Rollout, kinds: Sequence[str] | None = None) -> dict[str, float]:
        """`gcpo_update` on a rollout, plus the zero-advantage share of the disagreement kinds."""
        lr = self.learning_rate()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        mix = self.mix.loss_fn(self.model, self.step) if self.mix is not None else None
        info, groups_zero = gcpo_update(self.model, self.processor, self.optimizer, rollout, self.cfg, mix)
        if kinds is not None:
            flagged = torch.tensor([k in self.flagged for k in kinds], dtype=torch.bool)
            info["disagreement_pairs"] = float(flagged.sum())
            if flagged.any():
                info["zero_advantage_frac_disagreement"] = float(groups_zero[flagged].float().mean())
        info["lr"] = lr
        return info

    def step_once(self) -> dict[str, float]:
        """One step: draw pairs, roll out, update; returns the logged entry (timing included)."""
        started = time.perf_counter()
        batch = self.next_pairs()
        rollout = self.rollout(batch)
        sampled = time.perf_counter()
        info = self.update(rollout, batch.kinds)
        done = time.perf_counter()
        self.train_seconds += done - started
        self.step += 1
        info.update(step=self.step, rollout_seconds=round(sampled - started, 3),
                    update_seconds=round(done - sampled, 3), train_seconds=round(self.train_seconds, 3))
        return info

    def progress(self) -> float:
        return run_progress(self.step, self.train_seconds, self.cfg.max_steps, self.cfg.max_seconds)

    def done(self) -> bool:
        return self.progress() >= 1.0

    def train(self) -> None:
        """Step until max_steps or max_seconds; evaluate and checkpoint on their schedules."""
        cfg = self.cfg
        while not self.done():
            before = self.progress()
            entry = self.step_once()
            self.average.update(self.progress(), self.model.state_dict())
            for key in ("loss", "reward_mean"):
                if key in entry and not math.isfinite(entry[key]):
                    raise FloatingPointError(f"{key} is {entry[key]} at step {self.step}")
            self.history.append(entry)
            log.info("step %d  reward %.3f  zero-adv %.2f  parse %.2f  len %.0f  clip %.3f  kl %.4f  (%.1fs + %.1fs)",
                     self.step, entry["reward_mean"], entry["zero_advantage_frac"], entry["parse_rate"],
                     entry["response_length"], entry.get("clip_fraction", math.nan), entry.get("approx_kl", math.nan),
                     entry["rollout_seconds"], entry["update_seconds"])
            if self.best.due(before, self.progress()) and not self.done():
                self.select(self.evaluate())
            elif cfg.eval_every and self.step % cfg.eval_every == 0 and not self.done():
                self.evaluations.append(self.evaluate())
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self.save_checkpoint()

    # ------------------------------------------------------------------ evaluation and the end

    def evaluate(self) -> dict[str, Any]:
        """Greedy pairwise accuracy (both readouts) and parse rate on the val pairs."""
        started = time.perf_counter()
        entry: dict[str, Any] = {"step": self.step, "train_seconds": round(self.train_seconds, 3)}
        if self.val_pairs:
            scores = score_pairs(self.model, self.processor, self.val_pairs, self.images, self.checklists,
                                 batch_size=self.cfg.eval_batch_size, max_new_tokens=self.max_new_tokens)
            self.model.eval()  # `score` restores the mode it found; keep RL dropout-free regardless
            self.last_metrics = rrm_metrics(scores, self.val_kinds)
            entry.update(headline(self.last_metrics))
        entry["eval_seconds"] = round(time.perf_counter() - started, 3)
        log.info("eval at step %d: %s", self.step, {k: v for k, v in entry.items() if k != "step"})
        return entry

    def select(self, entry: dict[str, Any]) -> None:
        """Log a val evaluation and offer the current weights to the model selection (`BestWeights`)."""
        self.evaluations.append(entry)
        self.best.offer(entry, self.model.state_dict())

    def summary(self) -> dict[str, float]:
        """Means of the per-step statistics over the run (the whole history)."""
        keys = sorted({k for e in self.history for k, v in e.items() if isinstance(v, (int, float))} - {"step"})
        out = {}
        for key in keys:
            values = [e[key] for e in self.history if key in e and math.isfinite(e[key])]
            if values:
                out[f"mean_{key}"] = sum(values) / len(values)
        return out

    def finish(self) -> dict[str, float]:
        """Final val evaluation, out/model and out/metrics.json; returns the final metrics."""
        final = hand_on(self.model, self.best, self.average, self.evaluations, self.step, self.evaluate, self.select)
        final.update(self.summary())
        final.update({k: final[f"mean_{k}"] for k in ("zero_advantage_frac", "zero_signal_frac")
                      if f"mean_{k}" in final})  # the run's means under the summary's names
        final.update({"steps": float(self.step), "train_seconds": self.train_seconds,
                      "train_pairs": float(len(self.train_pairs)), "disagreement_kinds": float(len(self.flagged))})
        save_rrm(self.model, self.processor, self.out / "model")
        report = {
            "final": final, "history": self.history, "evaluations": self.evaluations,
            "config": dataclasses.asdict(self.cfg), "resumed_from": self.resumed_from, "selection": self.best.report(),
            "disagreement_kinds": sorted(self.flagged),
            "teacher_accuracy": {k: {"right": r, "n": n} for k, (r, n) in sorted(self.teacher_accuracy.items())},
            "sampler_weights": {k: w for k, w in sorted(self.weights.items())},
        }
        if self.last_metrics is not None:  # the last evaluation's (with selection: not always the model's)
            report["val_detail"] = self.last_metrics
        (self.out / "metrics.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
        return final


def run_gcpo(cfg: GCPOConfig, storage: Path, sft_model: Path, trajectories: Path, principles: Path, out: Path,
             *, resume: bool = True) -> dict[str, float]:
    """The `gcpo` stage: train from the SFT model, evaluate, checkpoint, resume (see module docstring).

    storage: the lake (curated pairs, images, world truth); sft_model: a `save_rrm` directory (the
    policy's start and, with β > 0, the frozen reference); trajectories / principles: the cold-start
    outputs (the teacher's scores decide the disagreement kinds; the checklists are the prompts).
    resume: continue from the newest valid checkpoint under out/checkpoints when there is one.
    """
    trainer = GCPOTrainer(cfg, storage, sft_model, trajectories, principles, out)
    trainer.setup(resume=resume)
    trainer.train()
    return trainer.finish()


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: run the stage with the params.yaml `gcpo` section and ``--set key=value`` overrides."""
    import yaml

    from editr1.config import config_from_dict, load_params

    parser = argparse.ArgumentParser(description="The gcpo stage: RL of the RRM on human pairs.")
    parser.add_argument("--storage", type=Path, required=True, help="Lake root.")
    parser.add_argument("--sft-model", type=Path, required=True, help="The SFT RRM (a save_rrm directory).")
    parser.add_argument("--out", type=Path, required=True, help="Run directory (model, checkpoints, metrics).")
    parser.add_argument("--trajectories", type=Path, help="Default: <storage>/rrm/trajectories.parquet.")
    parser.add_argument("--principles", type=Path, help="Default: <storage>/rrm/principles.parquet.")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params.yaml (its `gcpo` section).")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Override one gcpo field.")
    parser.add_argument("--no-resume", action="store_true", help="Ignore existing checkpoints.")
    args = parser.parse_args(argv)
    section = dict(load_params(args.params).get("gcpo") or {}) if args.params.exists() else {}
    for item in args.set:
        key, _, value = item.partition("=")
        section[key] = yaml.safe_load(value)
    cfg = config_from_dict(GCPOConfig, section, "gcpo")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    metrics = run_gcpo(cfg, args.storage, args.sft_model,
                       args.trajectories or args.storage / "rrm" / "trajectories.parquet",
                       args.principles or args.storage / "rrm" / "principles.parquet", args.out,
                       resume=not args.no_resume)
    print(json.dumps(metrics, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
