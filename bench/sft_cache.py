"""SFT steps with kept encodings (`sft.cache_encoded`: each example tokenised and run through the
frozen vision tower once) against encoding every batch afresh, on the same batches in the same run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/sft_cache.py [--storage LAKE] [--steps 10] [--batch 32]

Without --storage a 300-pair (--world-pairs) world lake is built in a temp dir. Both ways use
params.yaml's SFT settings (loss weights, one caption batch per judge batch, the trainer's target
cache already warm); each step is timed as encoding + `SFTTrainer.train_step`, one thread. The
kept way pays once to encode every example (timed apart: its first epoch); the script prints the
seconds per step both ways, the ratio, that one-time cost and the steps after which it has paid
for itself, and whether the first step's loss is the same both ways.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from editr1.training.data import encode_sft_batch
from editr1.training.example_cache import EncodedExamples
from editr1.training.forward import packed_loss_weights, packed_target_logits
from editr1.training.losses import sft_token_loss

from _lake import sft_bench_args, sft_trainer, world_lake  # bench/_lake.py


def main() -> None:
    args = sft_bench_args(__doc__, 10, "Steps timed each way.")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        storage = world_lake(args.storage, Path(tmp), args.world_pairs)
        trainer = sft_trainer(storage, Path(tmp) / "run", batch_size=args.batch, caption_batch_size=args.batch,
                              freeze_vision=True, unfreeze_vision_step=0, cache_encoded=False)
        weights = trainer._encode_kwargs()  # params.yaml's loss weights and the trainer's target cache
        judge, captions = trainer.train_examples, trainer.caption_examples
        n = min(len(judge), len(captions))
        steps = [list(range(i * args.batch, (i + 1) * args.batch)) for i in range(min(args.steps, n // args.batch))]
        for indices in steps:  # warm the target cache: the fresh way's steady state
            encode_sft_batch(trainer.processor, [judge[i] for i in indices], **weights)
            encode_sft_batch(trainer.processor, [captions[i] for i in indices], target_cache=trainer._targets)

        started = time.perf_counter()
        kept_judge = EncodedExamples(trainer.processor, judge, trainer.model, **weights)
        kept_captions = EncodedExamples(trainer.processor, captions, trainer.model, target_cache=trainer._targets)
        for i in range(0, len(judge), kept_judge.chunk):
            kept_judge.example(i)
        for i in range(0, len(captions), kept_captions.chunk):
            kept_captions.example(i)
        fill = time.perf_counter() - started

        def fresh(indices: list[int]) -> list:
            return [encode_sft_batch(trainer.processor, [judge[i] for i in indices], **weights),
                    encode_sft_batch(trainer.processor, [captions[i] for i in indices], target_cache=trainer._targets)]

        def kept(indices: list[int]) -> list:
            return [kept_judge.batch(indices), kept_captions.batch(indices)]

        with torch.no_grad():
            losses = []
            for batch in (fresh(steps[0])[0], kept(steps[0])[0]):
                logits, labels = packed_target_logits(trainer.model, batch)
                losses.append(float(sft_token_loss(logits, labels, packed_loss_weights(batch))))
        seconds = {}
        for name, encode in (("fresh", fresh), ("kept", kept), ("fresh again", fresh), ("kept again", kept)):
            started = time.perf_counter()
            for indices in steps:
                trainer.train_step(encode(indices))
            seconds[name] = (time.perf_counter() - started) / len(steps)
    plain = (seconds["fresh"] + seconds["fresh again"]) / 2
    cached = (seconds["kept"] + seconds["kept again"]) / 2
    same = abs(losses[0] - losses[1]) <= 1e-5 * abs(losses[0])
    print(f"per step ({args.batch} judgements + {args.batch} captions, {len(steps)} steps, each way twice): "
          f"encoded afresh {plain:.3f} s, kept {cached:.3f} s; ratio {plain / cached:.2f}; "
          f"encoding all {len(judge) + len(captions)} examples once: {fill:.1f} s "
          f"(paid back after {fill / max(plain - cached, 1e-9):.0f} steps); same loss: {same}")


if __name__ == "__main__":
    main()
