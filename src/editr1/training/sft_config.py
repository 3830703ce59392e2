"""The `sft` stage's settings (params.yaml `sft`) and its learning-rate schedule.

    from editr1.training.sft_config import SFTConfig, lr_factor
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from editr1.models.rrm import TinyRRMSpec
from editr1.training.optim import OPTIMIZERS, run_progress

SCHEDULES = ("cosine", "constant")
TOKENIZERS = ("phrase", "word")


@dataclass(frozen=True)
class SFTConfig:
    """The `sft` stage: model, optimisation, run length, evaluation and checkpoints."""

    model: str = field(
        default="tiny",
        metadata={"help": "'tiny' = build the tiny Qwen2.5-VL RRM from the tiny_* fields with a tokenizer trained "
                          "on the trajectories; else a `save_rrm` directory or a Qwen2.5-VL hub id (load_rrm)."})
    tiny_tokenizer: str = field(
        default="phrase",
        metadata={"help": "Tiny RRM tokenizer: 'phrase' (BPE merges may cross spaces: ~3x shorter examples, "
                          "editr1.rrm.corpus) or 'word' (Qwen-like, editr1.models.train_tokenizer)."})
    tiny_vocab_size: int = field(default=2000, metadata={"help": "Tiny RRM: target tokenizer size."})
    tiny_text_hidden: int = field(default=64, metadata={"help": "Tiny RRM: text decoder hidden size."})
    tiny_text_layers: int = field(default=2, metadata={"help": "Tiny RRM: text decoder layers."})
    tiny_text_heads: int = field(default=4, metadata={"help": "Tiny RRM: attention heads (head dim = hidden / heads)."})
    tiny_text_kv_heads: int = field(
        default=2,
        metadata={"help": "Tiny RRM: key/value heads (grouped-query attention below tiny_text_heads). The `full` "
                          "profile uses 4, one per query head (README: four key/value heads)."})
    tiny_text_intermediate: int = field(default=256, metadata={"help": "Tiny RRM: MLP inner size."})
    tiny_rope_theta: float = field(
        default=10.0, metadata={"help": "Tiny RRM: RoPE base; low so a few image tokens get distinct 2-D positions."})
    tiny_paired_frames: bool = field(
        default=False, metadata={"help": "Tiny RRM: the edited image gets the source as its first temporal "
                                         "frame (TinyRRMSpec.paired_frames); the vision pre-training then also "
                                         "learns the source's cells from the edited image's tokens."})
    tiny_vision_depth: int = field(default=2, metadata={"help": "Tiny RRM: vision transformer blocks."})
    tiny_vision_hidden: int = field(default=32, metadata={"help": "Tiny RRM: vision hidden size."})
    tiny_vision_heads: int = field(default=2, metadata={"help": "Tiny RRM: vision attention heads."})
    tiny_vision_intermediate: int = field(default=128, metadata={"help": "Tiny RRM: vision MLP inner size."})
    tiny_image_pixels: int = field(
        default=56 * 56, metadata={"help": "Tiny RRM: image area after resizing (sides snap to patch * merge)."})
    tiny_patch_size: int = field(
        default=7,
        metadata={"help": "Tiny RRM: vision patch side. 7 on 56x56 images gives 16 image tokens (each 14x14 px): "
                          "with 14 (4 tokens) a small shape is a faint part of a token and its colour was not "
                          "learned in 600 steps."})
    vision_pretrain_steps: int = field(
        default=0,
        metadata={"help": "Tiny RRM only: steps that first train its vision tower alone on the world's scene graphs "
                          "(colour and kind per grid cell, background; editr1.training.vision_pretrain), the stand-in "
                          "for a real VLM's pre-trained vision (~0.15 s a step; 400 → 99% of cell colours). 0 = none; "
                          "needs world batches. Measured: no accuracy gain yet within 10 min of SFT (README)."})
    freeze_vision: bool = field(
        default=False,
        metadata={"help": "Keep the vision tower (patch embedding, blocks, merger) frozen during SFT, as VLM "
                          "instruction tuning usually does (with vision_pretrain_steps: the language loss of an "
                          "untrained decoder otherwise reaches the pre-trained tower first). Never with a random tower."})
    vision_pretrain_min_acc: float = field(
        default=0.0,
        metadata={"help": "Tiny RRM: after vision_pretrain_steps the tower's held-out accuracy per cell (position, "
                          "colour, kind) must reach this, or it trains on in rounds of a quarter of "
                          "vision_pretrain_steps up to vision_pretrain_max_steps; short of it at the cap the run "
                          "warns and logs vision_reached 0. Some seeds leave the cells' positions near chance "
                          "after 600 steps (README). 0 = off."})
    vision_pretrain_max_steps: int = field(
        default=0,
        metadata={"help": "Cap on vision pre-training steps with vision_pretrain_min_acc (0 = vision_pretrain_steps)."})
    vision_pretrain_lr: float = field(default=3e-3, metadata={"help": "AdamW learning rate of the vision pre-training."})
    vision_pretrain_batch: int = field(default=64, metadata={"help": "Images per vision pre-training step."})
    unfreeze_vision_step: int = field(
        default=0,
        metadata={"help": "With freeze_vision: from this step on the tower trains too, at vision_lr_ratio × the "
                          "learning rate (0 = frozen throughout)."})
    vision_lr_ratio: float = field(default=0.1, metadata={"help": "The tower's learning rate over lr once unfrozen."})
    cache_encoded: bool = field(
        default=False,
        metadata={"help": "With freeze_vision (frozen throughout): encode each training example once — tokens, labels "
                          "and the frozen tower's image features — and keep it in memory "
                          "(editr1.training.example_cache); a step then only pads and stacks. Memory grows with "
                          "the examples × image tokens × hidden size: fine for the tiny RRM, large for a hub model."})
    lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (peft) instead of all weights; "
                                                        "merged into the saved model."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: tuple[str, ...] = field(
        default=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        metadata={"help": "Module names that get LoRA adapters."})
    optimizer: str = field(
        default="adamw",
        metadata={"help": "'adamw', or 'muon': Muon on the 2-D hidden weight matrices (the decoder's, and the "
                          "tower's when it trains; update RMS matched to AdamW's, so lr and schedule carry over) "
                          "and AdamW on the embedding, norms and biases (editr1.training.optim). README: "
                          "\"Muon: the same SFT steps learn more\"."})
    lr: float = field(default=3e-3, metadata={"help": "Peak learning rate (AdamW's; Muon's matched to it)."})
    warmup_steps: int = field(default=40, metadata={"help": "Linear warm-up steps."})
    schedule: str = field(
        default="cosine",
        metadata={"help": "'cosine' (to min_lr_ratio at the end of the run, measured by steps or seconds, "
                          "whichever is further along) or 'constant'."})
    min_lr_ratio: float = field(default=0.0, metadata={"help": "Final lr as a share of lr (cosine)."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (matrices only)."})
    batch_size: int = field(default=32, metadata={"help": "Judge examples per micro-batch."})
    caption_batch_size: int = field(
        default=0,
        metadata={"help": "Caption examples per optimizer step, in their own micro-batch (0 = none): the two "
                          "images with a short request → the first line of the trajectory (the teacher's "
                          "description of both images). Short examples that train perception cheaply."})
    description_weight: float = field(
        default=1.0,
        metadata={"help": "Loss weight of the description line a judgement opens with (its perception part) "
                          "relative to the judgement's other tokens. The rest of a judgement follows from that "
                          "line, so under teacher forcing it carries almost all the reason to read the images."})
    verdict_weight: float = field(
        default=1.0,
        metadata={"help": "Loss weight of a judgement's verdicts, relative to its other tokens: the yes/no that "
                          "ends each check line of the reasoning, each 0|1 of the JSON list and the final "
                          "<score> (editr1.training.data.target_parts). They are a few tokens "
                          "of a long text, most checks say 'yes': at weight 1 a tiny model learns to answer "
                          "yes to every check (README: why SFT stayed at chance)."})
    finding_weight: float = field(
        default=1.0,
        metadata={"help": "Loss weight of what each check line of a judgement found — the words between its "
                          "': ' and its yes/no ('blurry.' in '9. blur: blurry. no'; "
                          "editr1.training.data.target_parts). In generation the verdict follows from these words, "
                          "and most say the check passed ('none.', 'same.'): a model that has not learned to read "
                          "them off the description writes the common finding, then 'yes' "
                          "(README: where judgements go wrong)."})
    kind_balance: float = field(
        default=0.0,
        metadata={"help": "Judgement batches stratified over edit kinds (editr1.training.stratify.edit_kinds: "
                          "the world's candidate kind, else which principle categories the gold labels fail), "
                          "kind k at a share proportional to count_k ** (1 - kind_balance): 0 = every example "
                          "equally often (plain epochs), 1 = every kind equally often. The rare kinds (an edit of "
                          "the wrong object is 9% of the world's train edits) are where the instruction does "
                          "not predict the checks (README: every edit kind equally often)."})
    self_feed: float = field(
        default=0.0,
        metadata={"help": "Scheduled sampling in its parallel form: the probability that each token of a "
                          "judgement's reasoning (description and check lines, not their yes/no) is fed to the "
                          "model as a token sampled from the model's own prediction there (one extra no-grad "
                          "forward per judgement batch) instead of the teacher's. The labels stay the teacher's, "
                          "so the checks and the score learn to hold when the reasoning before them is the model's "
                          "own, as in generation. 0 = plain teacher forcing."})
    caption_warmup_steps: int = field(
        default=0,
        metadata={"help": "The first optimizer steps train on caption examples only (caption_batch_size per step; "
                          "short sequences, so fast): the model learns to describe the images before it learns "
                          "to judge from its descriptions. Needs caption_batch_size > 0."})
    grad_accum: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    grad_clip: float = field(default=1.0, metadata={"help": "Max global gradient norm (0 = no clipping)."})
    max_steps: int = field(default=3000, metadata={"help": "Optimizer steps (0 = no step limit)."})
    max_seconds: float = field(
        default=240.0,
        metadata={"help": "Wall-clock budget of the training steps in seconds (evaluation and checkpoints not "
                          "counted); stops at max_steps or here, whichever comes first; 0 = none. A time "
                          "budget makes the run length machine-dependent: resume is exact only with max_steps."})
    eval_every: int = field(default=0, metadata={"help": "Evaluate on val every this many steps (0 = only at the end)."})
    eval_pairs: int = field(
        default=64, metadata={"help": "Val human pairs scored (by generation) at each evaluation; 0 = none."})
    average_tail: float = field(
        default=0.0,
        metadata={"help": "Hand on the uniform mean of the (trainable) weights after every step of the run's last "
                          "average_tail share of its budget instead of the last weights; 0 = off. The "
                          "same-compute control gets GCPO's (`editr1.training.selection`)."})
    select_points: int = field(
        default=0,
        metadata={"help": "Model selection: evaluate on the val pairs at this many evenly spaced points of the "
                          "budget (the last at its end) and write the best one's weights as out/model; 0 = off. "
                          "The same-compute control gets GCPO's (`editr1.training.selection`)."})
    select_start: bool = field(
        default=False, metadata={"help": "With select_points: the start model is a candidate too."})
    eval_loss_examples: int = field(default=256, metadata={"help": "Val trajectories in the val loss."})
    eval_batch_size: int = field(default=32, metadata={"help": "Items per generation batch when scoring."})
    max_new_tokens: int = field(
        default=512, metadata={"help": "Generation budget when scoring: must fit a whole judgement."})
    checkpoint_every: int = field(default=200, metadata={"help": "Checkpoint every this many steps (0 = never)."})
    keep_checkpoints: int = field(default=2, metadata={"help": "Newest checkpoints kept."})
    log_every: int = field(default=50, metadata={"help": "Log the training loss every this many steps."})
    seed: int = field(default=0, metadata={"help": "Seed of the initialisation, data order and RNG."})
    threads: int = field(default=1, metadata={"help": "torch CPU threads (1 is fastest for tiny models here)."})
    workers: int = field(
        default=1,
        metadata={"help": "Data-parallel processes: each takes 1/workers of every batch and the gradients are "
                          "summed (gloo), so a step equals the one-process step up to float rounding. With "
                          "threads 1, workers 2 uses both cores of a 2-core machine."})
    device: str = field(default="cpu", metadata={"help": "torch device of the model (cpu, cuda, cuda:1…)."})
    compile: bool = field(
        default=False,
        metadata={"help": "torch.compile the decoder layers (dynamic shapes; `editr1.training.forward."
                          "compile_decoder`): fused kernels, ~1.3x the steps per second of the tiny RRM on CPU, "
                          "after ~30-60 s of compiling that count against max_seconds. For runs of many minutes."})
    fused_loss: bool = field(
        default=True,
        metadata={"help": "Fuse the LM head into the loss and compute both chunk by chunk "
                          "(`editr1.training.losses.linear_cross_entropy`): the same loss and gradients to float "
                          "rounding without the [tokens, vocabulary] logits and their gradient in memory "
                          "(`bench/sft_loss.py`). false: logits at the supervised positions, then the loss."})

    def __post_init__(self) -> None:
        if self.freeze_vision and self.model == "tiny" and self.vision_pretrain_steps <= 0:
            raise ValueError("sft.freeze_vision with a tiny model needs vision_pretrain_steps > 0 "
                             "(a frozen random vision tower sees nothing)")
        if not 0.0 <= self.vision_pretrain_min_acc <= 1.0:
            raise ValueError(f"sft.vision_pretrain_min_acc must be in [0, 1], got {self.vision_pretrain_min_acc}")
        if self.vision_pretrain_max_steps and self.vision_pretrain_max_steps < self.vision_pretrain_steps:
            raise ValueError(f"sft.vision_pretrain_max_steps ({self.vision_pretrain_max_steps}) is below "
                             f"vision_pretrain_steps ({self.vision_pretrain_steps})")
        if self.cache_encoded and not (self.freeze_vision and self.unfreeze_vision_step == 0):
            raise ValueError("sft.cache_encoded needs freeze_vision with unfreeze_vision_step 0: the kept image "
                             "features are only valid while the vision tower does not change")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"sft.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"sft.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.tiny_tokenizer not in TOKENIZERS:
            raise ValueError(f"sft.tiny_tokenizer must be one of {TOKENIZERS}, got {self.tiny_tokenizer!r}")
        if self.max_steps <= 0 and self.max_seconds <= 0:
            raise ValueError("sft: set max_steps or max_seconds (both 0 would never stop)")
        if not 0.0 <= self.average_tail <= 1.0:
            raise ValueError(f"sft.average_tail must be in [0, 1], got {self.average_tail}")
        if self.select_points < 0 or (self.select_points > 0 and self.eval_pairs <= 0):
            raise ValueError("sft.select_points must be >= 0, and > 0 only with eval_pairs > 0")
        if not self.description_weight > 0:
            raise ValueError(f"sft.description_weight must be > 0, got {self.description_weight}")
        if not self.finding_weight > 0:
            raise ValueError(f"sft.finding_weight must be > 0, got {self.finding_weight}")
        if not 0.0 <= self.kind_balance <= 1.0:
            raise ValueError(f"sft.kind_balance must be in [0, 1], got {self.kind_balance}")
        if not 0.0 <= self.self_feed <= 1.0:
            raise ValueError(f"sft.self_feed must be in [0, 1], got {self.self_feed}")
        if not self.verdict_weight > 0:
            raise ValueError(f"sft.verdict_weight must be > 0, got {self.verdict_weight}")
        if self.caption_warmup_steps < 0 or (self.caption_warmup_steps and not self.caption_batch_size):
            raise ValueError("sft.caption_warmup_steps must be >= 0 and needs caption_batch_size > 0, got "
                             f"{self.caption_warmup_steps} with caption_batch_size {self.caption_batch_size}")
        if self.batch_size < 1 or self.grad_accum < 1 or self.threads < 1:
            raise ValueError("sft.batch_size, grad_accum and threads must be >= 1")
        if not 1 <= self.workers <= self.batch_size or (self.caption_batch_size and self.caption_batch_size < self.workers):
            raise ValueError(f"sft.workers must be between 1 and the batch sizes, got {self.workers}")
        if self.workers > 1 and self.device != "cpu":
            raise ValueError("sft.workers > 1 runs CPU processes over gloo; on GPUs use one worker per run")

    def tiny_spec(self) -> TinyRRMSpec:
        """The `TinyRRMSpec` of the tiny_* fields (init seeded by ``seed``)."""
        return TinyRRMSpec(
            vocab_size=self.tiny_vocab_size, hidden_size=self.tiny_text_hidden, num_layers=self.tiny_text_layers,
            num_heads=self.tiny_text_heads, num_kv_heads=self.tiny_text_kv_heads,
            intermediate_size=self.tiny_text_intermediate, rope_theta=self.tiny_rope_theta,
            paired_frames=self.tiny_paired_frames,
            vision_depth=self.tiny_vision_depth, vision_hidden_size=self.tiny_vision_hidden,
            vision_num_heads=self.tiny_vision_heads, vision_intermediate_size=self.tiny_vision_intermediate,
            image_min_pixels=self.tiny_image_pixels, image_max_pixels=self.tiny_image_pixels,
            patch_size=self.tiny_patch_size, seed=self.seed,
        )


# Fields that may change between a checkpoint and its resumption without changing the trajectory.
RUN_FIELDS = {"max_steps", "max_seconds", "eval_every", "eval_pairs", "eval_loss_examples", "eval_batch_size",
               "max_new_tokens", "checkpoint_every", "keep_checkpoints", "log_every", "threads", "device",
               "workers"}


def lr_factor(cfg: SFTConfig, step: int, train_seconds: float) -> float:
    """Multiplier of ``cfg.lr`` for the update after ``step`` updates and ``train_seconds`` of training.

    Linear warm-up over ``warmup_steps``, times (cosine) 0.5·(1 + cos(π·p)) rescaled to end at
    ``min_lr_ratio``, with run progress p = max(step / max_steps, train_seconds / max_seconds)
    (each term only when its limit is set), clipped to [0, 1].
    """
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
    if cfg.schedule == "constant":
        return warm
    progress = run_progress(step, train_seconds, cfg.max_steps, cfg.max_seconds)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return warm * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine)
