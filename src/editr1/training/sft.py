"""The `sft` stage: supervised fine-tuning of the RRM on the teacher's trajectories (DESIGN §1, §5).

    from editr1.training.sft import SFTConfig, run_sft
    metrics = run_sft(SFTConfig(), storage, storage / "rrm/trajectories.parquet",
                      storage / "rrm/principles.parquet", Path("runs/sft"))

Trains on the accepted ``train``-split trajectories (prompt → teacher text, loss on the text only),
evaluates every ``eval_every`` steps on ``val`` (loss, parse rate, pairwise accuracy of both
readouts on human pairs), checkpoints every ``checkpoint_every`` steps under ``out/checkpoints/``
and resumes from the newest valid checkpoint exactly (same weights as an uninterrupted run when
the run length is set by ``max_steps``; a ``max_seconds`` budget depends on the machine's speed).
Writes the final model to ``out/model/`` (`editr1.models.load_rrm` reads it) and ``out/metrics.json``; with
``average_tail`` / ``select_points`` that model is the tail average / the best val evaluation's weights
(`editr1.training.selection`).

From a shell (``sft`` section of params.yaml, with overrides)::

    python -m editr1.training.sft --storage storage/demo --out runs/sft --set max_seconds=60
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import BatchFeature, PreTrainedTokenizerFast

from editr1.coldstart import load_principles, load_trajectories
from editr1.evaluation.rrm_eval import headline, pair_kinds, rrm_metrics, score_pairs
from editr1.lake.images import ImageLoader
from editr1.lake.objects import open_object_store
from editr1.models.processor import RRMProcessor, build_processor
from editr1.models.rrm import build_tiny_rrm, load_rrm, save_rrm
from editr1.models.tokenizer import train_tokenizer, vision_token_ids
from editr1.rrm.corpus import content_words, train_phrase_tokenizer, trajectory_corpus
from editr1.training import parallel
from editr1.training.checkpoint import (
    ResumableSampler,
    capture_rng,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from editr1.training.data import (
    caption_examples,
    encode_sft_batch,
    sft_examples,
    token_counts,
)
from editr1.training.example_cache import EncodedExamples
from editr1.training.forward import base_model as _base_model
from editr1.training.forward import (compile_decoder, packed_loss_weights, packed_target_hidden,
                                     packed_target_logits, self_fed)
from editr1.training.losses import IGNORE_INDEX, linear_cross_entropy, sft_token_loss
from editr1.training.optim import build_optimizer, run_progress
from editr1.training.selection import BestWeights, TailAverage, hand_on, val_pairs
from editr1.training.sft_config import RUN_FIELDS, SFTConfig, lr_factor
from editr1.training.sft_eval import teacher_forced, val_marks
from editr1.training.stratify import PairKindSampler, balanced_weights, edit_kinds
from editr1.training.vision_pretrain import VisionPretrainer, world_scenes
from editr1.world.truth import WorldTruth

log = logging.getLogger(__name__)


def trainable_state(model: torch.nn.Module) -> dict[str, Tensor]:
    """The trainable parameters by name (all weights, or the LoRA adapters): what a checkpoint needs."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


class SFTTrainer:
    """setup → train → save; `resume` restores a checkpoint; `train_step` is one optimizer step.

        trainer = SFTTrainer(cfg, storage, trajectories, principles, out)
        trainer.setup(resume=True)
        trainer.train()
        metrics = trainer.finish()
    """

    def __init__(self, cfg: SFTConfig, storage: Path, trajectories: Path, principles: Path, out: Path,
                 init: Path | None = None):
        self.cfg = cfg
        self.storage = Path(storage)
        self.trajectories_path = Path(trajectories)
        self.principles_path = Path(principles)
        self.out = Path(out)
        self.init = Path(init) if init is not None else None
        self.checkpoint_dir = self.out / "checkpoints"
        self.step = 0
        self.train_seconds = 0.0
        self.history: list[dict[str, Any]] = []
        self._loss_sum = 0.0
        self._loss_steps = 0
        self.resumed_from: str | None = None
        self.last_metrics: dict[str, Any] | None = None
        self.vision_report: dict[str, float] = {}
        self._targets: dict = {}  # encode_sft_batch's target_cache: each target tokenised once
        self.best = BestWeights(cfg.select_points, cfg.select_start)
        self.average = TailAverage(cfg.average_tail)

    # ------------------------------------------------------------------ setup

    @functools.cached_property
    def truth(self) -> WorldTruth:
        """The world's scene graphs in the lake (pair kinds, vision pre-training), read once."""
        return WorldTruth.from_lake(self.storage)

    def setup(self, resume: bool = True) -> None:
        """Load data, build (or load) the model, optimizer and sampler; resume from a checkpoint if asked."""
        cfg = self.cfg
        torch.set_num_threads(cfg.threads)
        self.out.mkdir(parents=True, exist_ok=True)
        rows = load_trajectories(self.trajectories_path, accepted_only=True)
        train_rows = [r for r in rows if r["split"] == "train"]
        val_rows = [r for r in rows if r["split"] == "val"]
        if not train_rows:
            raise ValueError(f"{self.trajectories_path}: no accepted train-split trajectories")
        self.images = ImageLoader(open_object_store("", self.storage), capacity=1 << 16)
        self.train_examples = sft_examples(train_rows, self.images)
        self.val_examples = sft_examples(val_rows[: cfg.eval_loss_examples], self.images)
        self.checklists = load_principles(self.principles_path) if cfg.eval_pairs > 0 else {}
        self.val_pairs = val_pairs(self.storage, self.checklists, cfg.eval_pairs)
        self.val_kinds = pair_kinds(self.val_pairs, self.truth) if self.val_pairs else []

        checkpoint = parallel.broadcast_object(latest_checkpoint(self.checkpoint_dir) if resume else None)
        if parallel.rank() > 0:
            parallel.barrier()  # rank 0 builds first (it trains and saves the tokenizer the others load)
        model, self.processor = self._build_model(train_rows, resumed=checkpoint is not None)
        if parallel.rank() == 0:
            parallel.barrier()
        # A checkpoint holds the trainable weights only: the vision pre-training is redone on resume
        # when the tower is frozen (it is seeded, so it gives the same weights again). All ranks take part.
        if (cfg.vision_pretrain_steps > 0 and self.init is None and cfg.model == "tiny"
                and (checkpoint is None or cfg.lora or cfg.freeze_vision)):
            model.to(cfg.device)
            parallel.broadcast_module(model)
            self.vision_report = self._pretrain_vision(model, self.processor, train_rows, val_rows)
        self.model = self._adapt(model)
        self.model.to(cfg.device)
        self.model.train()
        if cfg.compile:
            compile_decoder(self.model)
        params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        groups = [
            {"params": [(n, p) for n, p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
            {"params": [(n, p) for n, p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        if cfg.freeze_vision and cfg.unfreeze_vision_step > 0:  # frozen until then: no gradient, no update
            groups.append({"params": list(self._visual.named_parameters()), "weight_decay": cfg.weight_decay,
                           "lr_ratio": cfg.vision_lr_ratio})
        self.optimizer = build_optimizer(cfg.optimizer, groups, cfg.lr)
        n = len(self.train_examples)
        if cfg.kind_balance > 0:  # judgement batches stratified over edit kinds (SFTConfig.kind_balance)
            kinds = edit_kinds(train_rows, self.truth)
            self.sampler = PairKindSampler(kinds, balanced_weights(kinds, cfg.kind_balance), cfg.seed,
                                           batch_size=min(cfg.batch_size, n))
            log.info("judgement batches by kind: %s", dict(zip(self.sampler.kinds, self.sampler.shares.round(3))))
        else:
            self.sampler = ResumableSampler(n, cfg.seed, min(cfg.batch_size, n), drop_last=True)
        self.caption_examples = caption_examples(self.train_examples) if cfg.caption_batch_size else []
        self.caption_sampler = (
            ResumableSampler(len(self.caption_examples), cfg.seed + 1,
                             min(cfg.caption_batch_size, len(self.caption_examples)), drop_last=True)
            if self.caption_examples else None)
        self._encoded = self._caption_encoded = None
        if cfg.cache_encoded:  # the tower is frozen throughout (SFTConfig checks): encode each example once
            self._encoded = EncodedExamples(self.processor, self.train_examples, self.model, **self._encode_kwargs())
            self._caption_encoded = EncodedExamples(self.processor, self.caption_examples, self.model,
                                                    target_cache=self._targets)
        torch.manual_seed(cfg.seed)
        if checkpoint is not None:
            self.resume(checkpoint)
        parallel.broadcast_module(self.model)  # every rank starts from rank 0's weights

    def _pretrain_vision(self, model: torch.nn.Module, processor: RRMProcessor, train_rows: list[dict[str, Any]],
                         val_rows: list[dict[str, Any]]) -> dict[str, float]:
        """`VisionPretrainer` on the train images' scene graphs; returns loss, held-out accuracy and time."""
        cfg = self.cfg
        truth = self.truth
        scenes = world_scenes(truth, train_rows)
        if not scenes:
            raise ValueError("sft.vision_pretrain_steps > 0 needs the world's scene graphs (synthetic-world "
                             "batches) for the train images; set it to 0 for other data")
        started = time.perf_counter()
        pairs = [(row["source_sha"], row["edited_sha"]) for row in train_rows]
        pretrainer = VisionPretrainer(model, processor, self.images, scenes, seed=cfg.seed,
                                      lr=cfg.vision_pretrain_lr, batch_size=cfg.vision_pretrain_batch, pairs=pairs)
        loss = math.nan
        lead = parallel.rank() == 0
        val_scenes = {k: v for k, v in world_scenes(truth, val_rows[:200]).items() if k not in scenes}
        done, goal = 0, cfg.vision_pretrain_steps
        cap = max(cfg.vision_pretrain_max_steps, goal)
        while True:
            for step in range(done, goal):
                loss = pretrainer.step()
                if lead and cfg.log_every and (step + 1) % cfg.log_every == 0:
                    log.info("vision pre-training step %d  loss %.4f", step + 1, loss)
            done = goal
            accuracy = pretrainer.accuracy(val_scenes) if lead else {}
            cells = [accuracy[k] for k in ("position", "color", "kind") if k in accuracy]
            # Rank 0 decides, every rank follows: all of them take the same steps.
            short = parallel.broadcast([float(bool(cells) and min(cells) < cfg.vision_pretrain_min_acc)])[0] > 0
            if not short or done >= cap:
                break
            goal = min(cap, done + max(1, cfg.vision_pretrain_steps // 4))
            log.info("vision pre-training: held-out cells %s after %d steps, under %.2f: %d more", accuracy, done,
                     cfg.vision_pretrain_min_acc, goal - done)
        seconds = time.perf_counter() - started
        if not lead:
            return {}
        report = {"vision_loss": loss, "vision_seconds": seconds, "vision_steps": float(done),
                  **{f"vision_val_{k}": v for k, v in accuracy.items()}}
        if cfg.vision_pretrain_min_acc > 0:
            report["vision_reached"] = float(not short)
            if short:
                log.warning("vision pre-training stopped at its cap of %d steps with held-out cells %s under "
                            "vision_pretrain_min_acc %.2f: the decoder will read the images badly", done,
                            {k: round(v, 3) for k, v in accuracy.items()}, cfg.vision_pretrain_min_acc)
        log.info("vision pre-training: %s", report)
        return report

    def _build_model(self, train_rows: list[dict[str, Any]], resumed: bool) -> tuple[torch.nn.Module, RRMProcessor]:
        """The model to train and its processor: ``init``, a new tiny RRM (its tokenizer trained on the
        train trajectories, or reloaded on resume and in other ranks), or ``cfg.model``."""
        cfg = self.cfg
        if self.init is not None:
            model, processor = load_rrm(self.init)
        elif cfg.model == "tiny":
            spec = cfg.tiny_spec()
            tokenizer_dir = self.out / "tokenizer"
            if (resumed or parallel.rank() > 0) and tokenizer_dir.is_dir():
                # The checkpoint's embedding rows belong to this tokenizer: never retrain it on resume.
                tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
            elif cfg.tiny_tokenizer == "phrase":
                tokenizer = train_phrase_tokenizer(trajectory_corpus(train_rows), spec.vocab_size, tokenizer_dir,
                                                   words=content_words(train_rows))
            else:
                tokenizer = train_tokenizer(trajectory_corpus(train_rows), spec.vocab_size, tokenizer_dir)
            model, processor = build_tiny_rrm(spec, tokenizer), build_processor(tokenizer, spec)
        else:
            model, processor = load_rrm(cfg.model)
        return model, processor

    @property
    def _visual(self) -> torch.nn.Module:
        return _base_model(self.model).model.visual

    def _adapt(self, model: torch.nn.Module) -> torch.nn.Module:
        """LoRA adapters (``cfg.lora``) and a frozen vision tower (``cfg.freeze_vision``), as configured."""
        cfg = self.cfg
        if cfg.lora:
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                              target_modules=list(cfg.lora_target_modules))
            model = get_peft_model(model, lora)
        if cfg.freeze_vision:
            for param in _base_model(model).model.visual.parameters():
                param.requires_grad_(False)
        return model

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, Any]:
        """Everything an exact resume needs."""
        return {
            "model": trainable_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"step": self.step, "train_seconds": self.train_seconds},
            "sampler": self.sampler.state_dict(),
            "caption_sampler": self.caption_sampler.state_dict() if self.caption_sampler else None,
            "rng": capture_rng(),
            "step": self.step,
            "history": self.history,
            "vision_report": self.vision_report,
            "loss_window": (self._loss_sum, self._loss_steps),
            "best": self.best.state_dict(),
            "average": self.average.state_dict(),
            "config": dataclasses.asdict(self.cfg),
        }

    def save_checkpoint(self) -> Path:
        return save_checkpoint(self.checkpoint_dir, self.step, self.state(), keep=self.cfg.keep_checkpoints)

    def resume(self, path: Path) -> None:
        """Restore model, optimizer, schedule, sampler, history and RNG (last) from checkpoint ``path``."""
        state = load_checkpoint(path)
        saved = state["config"]
        changed = sorted(k for k, v in dataclasses.asdict(self.cfg).items()
                         if k not in RUN_FIELDS and saved.get(k) != v)
        if changed:
            raise ValueError(f"checkpoint {path} was made with different settings {changed}: "
                             "use another out directory or resume=False")
        missing, unexpected = self.model.load_state_dict(state["model"], strict=False)
        trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
        if unexpected or trainable & set(missing):
            raise ValueError(f"checkpoint {path} does not fit the model (missing {sorted(trainable & set(missing))[:3]}, "
                             f"unexpected {unexpected[:3]})")
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        if self.caption_sampler is not None:
            self.caption_sampler.load_state_dict(state["caption_sampler"])
        self.step = state["step"]
        self.train_seconds = state["scheduler"]["train_seconds"]
        self.history = state["history"]
        self.vision_report = state.get("vision_report") or self.vision_report
        self._loss_sum, self._loss_steps = state["loss_window"]
        self.best.load_state_dict(state.get("best"))
        self.average.load_state_dict(state.get("average"))
        restore_rng(state["rng"])
        self.resumed_from = str(path)
        log.info("resumed from %s at step %d", path, self.step)

    # ------------------------------------------------------------------ training

    def next_batches(self) -> list[BatchFeature]:
        """The micro-batches of the next optimizer step (advances the samplers): ``grad_accum`` judge
        batches (none in the first ``caption_warmup_steps`` steps), then a caption batch when
        ``caption_batch_size`` > 0."""
        cfg = self.cfg
        judging = self.step >= cfg.caption_warmup_steps
        batches = [self._judge_batch(parallel.shard(self.sampler.next_batch()))
                   for _ in range(cfg.grad_accum if judging else 0)]
        if cfg.self_feed > 0 and batches:
            # Seeded by step and rank, so a resumed run draws the same tokens.
            generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step * 101 + parallel.rank())
            batches = [self_fed(self.model, b, cfg.self_feed, generator, self._never_fed) for b in batches]
        if self.caption_sampler is not None:
            indices = parallel.shard(self.caption_sampler.next_batch())
            batches.append(self._caption_encoded.batch(indices) if self._caption_encoded is not None else
                           encode_sft_batch(self.processor, [self.caption_examples[i] for i in indices],
                                            target_cache=self._targets))
        return batches

    def _encode_kwargs(self) -> dict[str, Any]:
        cfg = self.cfg
        return {"description_weight": cfg.description_weight, "verdict_weight": cfg.verdict_weight,
                "finding_weight": cfg.finding_weight, "self_feed": cfg.self_feed > 0, "target_cache": self._targets}

    def _judge_batch(self, indices: list[int]) -> BatchFeature:
        """The judge examples ``indices`` as a batch: kept encodings with ``cache_encoded``, else encoded now."""
        if self._encoded is not None:
            return self._encoded.batch(indices)
        return encode_sft_batch(self.processor, [self.train_examples[i] for i in indices], **self._encode_kwargs())

    def train_step(self, batch: BatchFeature | Sequence[BatchFeature]) -> float:
        """One optimizer step on a batch (or the micro-batches of one step); returns the training loss.

        The loss is token-weighted over all micro-batches together (each micro-batch's mean loss is
        weighted by its share of the supervised tokens — of their loss weights, with
        ``description_weight`` and ``verdict_weight``), so accumulation equals one big batch; with ``workers`` > 1 the shares
        are of all ranks' tokens and the gradients are summed over ranks.
        """
        batches = [batch] if isinstance(batch, BatchFeature) else list(batch)
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.lr * lr_factor(self.cfg, self.step, self.train_seconds) * group.get("lr_ratio", 1.0)
        if self.cfg.freeze_vision and 0 < self.cfg.unfreeze_vision_step <= self.step:
            self._visual.requires_grad_(True)
        weights = [packed_loss_weights(b) for b in batches]
        counts = [float(w.sum()) if w is not None else int((b["labels"][:, 1:] != IGNORE_INDEX).sum())
                  for b, w in zip(batches, weights)]
        total = torch.tensor([float(sum(counts))], dtype=torch.float64)
        parallel.all_reduce_sum([total])
        self.optimizer.zero_grad(set_to_none=True)
        loss_value = torch.zeros(1, dtype=torch.float64)  # on the CPU, where the ranks' sums meet
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        head = _base_model(self.model).get_output_embeddings()
        for b, w, count in zip(batches, weights, counts):
            if self.cfg.fused_loss and head.bias is None:  # LM head and loss fused, chunked
                hidden, targets = packed_target_hidden(self.model, b)
                loss = linear_cross_entropy(hidden, head.weight, targets, None if w is None else w[0, 1:])
            else:
                loss = sft_token_loss(*packed_target_logits(self.model, b), w)
            loss = loss * (count / float(total))
            loss.backward()
            loss_value += float(loss.detach())
        parallel.all_reduce_gradients(trainable, [loss_value])
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trainable, self.cfg.grad_clip)
        self.optimizer.step()
        return float(loss_value)

    def progress(self) -> float:
        return run_progress(self.step, self.train_seconds, self.cfg.max_steps, self.cfg.max_seconds)

    def done(self) -> bool:
        return self.progress() >= 1.0

    def train(self) -> None:
        """Step until max_steps or max_seconds; evaluate and checkpoint on their schedules."""
        cfg = self.cfg
        self.model.train()
        lead = parallel.rank() == 0
        if lead and self.best.start and self.step == 0:
            self.select(self.evaluate())
        while True:
            # The clock of rank 0 sets the schedule and the end for every rank.
            self.train_seconds = parallel.broadcast([self.train_seconds])[0]
            if self.done():
                break
            started, before = time.perf_counter(), self.progress()
            loss = self.train_step(self.next_batches())
            self.train_seconds += time.perf_counter() - started
            self.step += 1
            self._loss_sum += loss
            if lead:
                self.average.update(self.progress(), self._trainable())
            self._loss_steps += 1
            if not math.isfinite(loss):
                raise FloatingPointError(f"training loss is {loss} at step {self.step}")
            if lead and cfg.log_every and self.step % cfg.log_every == 0:
                log.info("step %d  loss %.4f  lr %.2e  %.2f steps/s", self.step, loss,
                         self.optimizer.param_groups[0]["lr"], self.step / max(self.train_seconds, 1e-9))
            if lead and self.best.due(before, self.progress()) and not self.done():
                self.select(self.evaluate())
            elif lead and cfg.eval_every and self.step % cfg.eval_every == 0 and not self.done():
                self.history.append(self.evaluate())
            if lead and cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self.save_checkpoint()

    # ------------------------------------------------------------------ evaluation

    @functools.cached_property
    def _never_fed(self) -> list[int]:
        """Ids `self_fed` never draws: vision placeholders and special tokens (computed once per run)."""
        tokenizer = self.processor.tokenizer
        return sorted(set(vision_token_ids(tokenizer)) | set(tokenizer.all_special_ids))

    @functools.cached_property
    def _val_marks(self) -> list[list[tuple[str | None, bool]]]:
        return val_marks(self.processor, self.val_examples)  # tokenised once per run

    def teacher_forced(self) -> dict[str, float]:
        """`editr1.training.sft_eval.teacher_forced` on the val trajectories (empty without them)."""
        return teacher_forced(self.model, self.processor, self.val_examples, self._val_marks, self.cfg.batch_size,
                              self._targets)

    def evaluate(self) -> dict[str, Any]:
        """Val loss, and (with eval_pairs) parse rate and pairwise accuracy of both readouts; model left in train mode."""
        started = time.perf_counter()
        self.model.eval()
        try:
            entry: dict[str, Any] = {
                "step": self.step, "train_seconds": round(self.train_seconds, 3),
                "train_loss": self._loss_sum / self._loss_steps if self._loss_steps else None,
                **self.teacher_forced(),
            }
            self._loss_sum, self._loss_steps = 0.0, 0
            if self.val_pairs:
                scores = score_pairs(_base_model(self.model), self.processor, self.val_pairs, self.images,
                                     self.checklists, batch_size=self.cfg.eval_batch_size,
                                     max_new_tokens=self.cfg.max_new_tokens)
                self.last_metrics = rrm_metrics(scores, self.val_kinds)
                entry.update(headline(self.last_metrics))
        finally:
            self.model.train()
        entry["eval_seconds"] = round(time.perf_counter() - started, 3)
        log.info("eval at step %d: %s", self.step, {k: v for k, v in entry.items() if k != "step"})
        return entry

    def select(self, entry: dict[str, Any]) -> None:
        """Log a val evaluation and offer the trainable weights to the model selection (`BestWeights`)."""
        self.history.append(entry)
        self.best.offer(entry, self._trainable())

    def _trainable(self) -> dict[str, Tensor]:
        return {name: p for name, p in self.model.named_parameters() if p.requires_grad}

    # ------------------------------------------------------------------ the end

    def finish(self) -> dict[str, float]:
        """Final evaluation, save the model to out/model and write out/metrics.json; return the final metrics
        (rank 0 only: other data-parallel ranks return an empty dict)."""
        if parallel.rank() > 0:
            return {}
        final = hand_on(self.model, self.best, self.average, self.history, self.step, self.evaluate, self.select)
        sample = encode_sft_batch(self.processor, self.train_examples[: min(64, len(self.train_examples))])
        counts = token_counts(sample)
        n_sample = sample["input_ids"].shape[0]
        final.update({
            "steps": float(self.step),
            "steps_per_second": self.step / self.train_seconds if self.train_seconds else 0.0,
            "train_examples": float(len(self.train_examples)),
            "tokens_per_example": counts["total"] / n_sample,
            "target_tokens_per_example": counts["target"] / n_sample,
            # examples this rank encoded once and kept (sft.cache_encoded), judgements and captions
            "kept_encodings": float(sum(len(c) for c in (self._encoded, self._caption_encoded) if c is not None)),
            **self.vision_report,
        })
        model = self.model
        if self.cfg.lora:
            model = model.merge_and_unload()
        save_rrm(_base_model(model), self.processor, self.out / "model")
        report = {"final": final, "history": self.history, "config": dataclasses.asdict(self.cfg),
                  "resumed_from": self.resumed_from, "selection": self.best.report()}
        if self.last_metrics is not None:
            report["val_detail"] = self.last_metrics
        (self.out / "metrics.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
        return final


def run_sft(cfg: SFTConfig, storage: Path, trajectories: Path, principles: Path, out: Path, *,
            init: Path | None = None, resume: bool = True) -> dict[str, float]:
    """The `sft` stage: train, evaluate, checkpoint, resume; returns the final metrics (see module docstring).

    init: start from this `save_rrm` model (its tokenizer too) instead of building or loading
    ``cfg.model`` — "SFT continued" controls. resume: continue from the newest valid checkpoint
    under ``out/checkpoints`` when there is one.
    """
    return parallel.launch(_run_rank, cfg.workers, (cfg, storage, trajectories, principles, out, init, resume),
                           workdir=Path(out))


def _run_rank(cfg: SFTConfig, storage: Path, trajectories: Path, principles: Path, out: Path, init: Path | None,
              resume: bool) -> dict[str, float]:
    trainer = SFTTrainer(cfg, storage, trajectories, principles, out, init=init)
    trainer.setup(resume=resume)
    trainer.train()
    return trainer.finish()


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: run the stage with the params.yaml `sft` section and ``--set key=value`` overrides."""
    import yaml

    from editr1.config import config_from_dict, load_params

    parser = argparse.ArgumentParser(description="The sft stage: supervised fine-tuning of the RRM.")
    parser.add_argument("--storage", type=Path, required=True, help="Lake root.")
    parser.add_argument("--out", type=Path, required=True, help="Run directory (model, checkpoints, metrics).")
    parser.add_argument("--trajectories", type=Path, help="Default: <storage>/rrm/trajectories.parquet.")
    parser.add_argument("--principles", type=Path, help="Default: <storage>/rrm/principles.parquet.")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params.yaml with an `sft` section.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Override one sft field.")
    parser.add_argument("--init", type=Path, help="Start from this saved RRM.")
    parser.add_argument("--no-resume", action="store_true", help="Ignore existing checkpoints.")
    args = parser.parse_args(argv)
    section = dict(load_params(args.params).get("sft") or {})
    for item in args.set:
        key, _, value = item.partition("=")
        section[key] = yaml.safe_load(value)
    cfg = config_from_dict(SFTConfig, section, "sft")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    metrics = run_sft(cfg, args.storage, args.trajectories or args.storage / "rrm" / "trajectories.parquet",
                      args.principles or args.storage / "rrm" / "principles.parquet", args.out,
                      init=args.init, resume=not args.no_resume)
    print(json.dumps(metrics, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
