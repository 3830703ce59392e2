"""SFT steps with the LM head fused into the loss (`sft.fused_loss`, `linear_cross_entropy`: the
logits and their gradient chunk by chunk) against the logits at the supervised positions then the
loss, on the same batches in the same run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/sft_loss.py [--storage LAKE] [--steps 20] [--batch 32]

Without --storage a 300-pair (--world-pairs) world lake is built in a temp dir. Both ways use
params.yaml's SFT settings (kept encodings, loss weights, one caption batch per judge batch), one
thread, one process; each step is `SFTTrainer.train_step` on batches drawn once beforehand. The
ways alternate (each twice) from the same weights and optimizer state. The script prints the
seconds per step both ways, the ratio, the largest gap between the two ways' first-step loss and
gradients (float rounding), and the size of the logits the fused way never holds whole (with a
hub model's vocabulary of ~150 k tokens that is GBs per step; with the tiny RRM's ~1.3 k, tens of MB).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from _lake import sft_bench_args, sft_trainer, world_lake  # bench/_lake.py


def main() -> None:
    args = sft_bench_args(__doc__, 20)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        storage = world_lake(args.storage, Path(tmp), args.world_pairs)
        trainer = sft_trainer(storage, Path(tmp) / "run", batch_size=args.batch, caption_batch_size=args.batch,
                              caption_warmup_steps=0)
        batches = [trainer.next_batches() for _ in range(args.steps)]
        start = (copy.deepcopy(trainer.model.state_dict()), copy.deepcopy(trainer.optimizer.state_dict()))
        trainable = [p for p in trainer.model.parameters() if p.requires_grad]

        def first_step(fused: bool) -> tuple[float, list[torch.Tensor]]:
            lr = trainer.cfg.lr
            trainer.cfg = dataclasses.replace(trainer.cfg, fused_loss=fused, lr=0.0)  # gradients, weights unmoved
            trainer.model.load_state_dict(start[0])
            trainer.optimizer.load_state_dict(start[1])
            loss = trainer.train_step(batches[0])
            trainer.cfg = dataclasses.replace(trainer.cfg, lr=lr)
            return loss, [p.grad.clone() for p in trainer.model.parameters() if p.requires_grad]

        (loss_a, grads_a), (loss_b, grads_b) = first_step(False), first_step(True)
        grad_gap = max(float((a - b).abs().max() / a.abs().max().clamp_min(1e-12)) for a, b in zip(grads_a, grads_b))
        seconds: dict[str, list[float]] = {"logits then loss": [], "fused": []}
        for _ in range(2):
            for name, fused in (("logits then loss", False), ("fused", True)):
                trainer.cfg = dataclasses.replace(trainer.cfg, fused_loss=fused)
                trainer.model.load_state_dict(start[0])
                trainer.optimizer.load_state_dict(start[1])
                trainer.train_step(batches[0])  # warm
                started = time.perf_counter()
                for batch in batches:
                    trainer.train_step(batch)
                seconds[name].append((time.perf_counter() - started) / len(batches))
        targets = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches[0])
        vocab = trainer.model.get_output_embeddings().weight.shape[0]
    same = abs(loss_a - loss_b) <= 1e-5 * abs(loss_a) and grad_gap < 1e-3
    plain = sum(seconds["logits then loss"]) / 2
    fused = sum(seconds["fused"]) / 2
    print(f"per step ({args.batch} judgements + {args.batch} captions, {len(trainable)} trainable tensors, "
          f"{args.steps} steps, each way twice): logits then loss {plain:.3f} s, fused {fused:.3f} s; "
          f"ratio {plain / fused:.2f}; first-step loss {loss_a:.6f} vs {loss_b:.6f}, "
          f"largest relative gradient gap {grad_gap:.1e}; same: {same}; "
          f"logits not held whole: {targets} targets x {vocab} tokens = {targets * vocab * 4 / 2**20:.0f} MB per step "
          f"in float32, and as much again for their gradient")


if __name__ == "__main__":
    main()
