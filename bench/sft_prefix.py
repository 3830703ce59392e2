"""SFT steps that run the batch's shared opening once (`editr1.training.forward.decoder_hidden`:
the system prompt and the user turn up to the first image, the same tokens in every row), and those
steps with compiled decoder layers (`compile_decoder`, `sft.compile`), against one eager pass over
every row's whole sequence, on the same batches in the same run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/sft_prefix.py [--storage LAKE] [--steps 10] [--batch 32]

Without --storage a 300-pair (--world-pairs) world lake is built in a temp dir. Each step is a
judgement batch and a caption batch (params.yaml's loss weights, kept encodings), forward through
the LM head on the supervised tokens, loss, backward; one thread, each way three times, alternating.
Prints the seconds per step each way, the ratios to the whole-sequence way, the shared and total
tokens, the largest difference between the shared and whole ways' losses and gradients (same: both
within float rounding), and the seconds the first compiled pass over the steps took (compiling).
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from editr1.training.forward import compile_decoder, packed_loss_weights, packed_target_logits, shared_prefix_length
from editr1.training.losses import sft_token_loss

from _lake import sft_bench_args, sft_trainer, world_lake  # bench/_lake.py


def main() -> None:
    args = sft_bench_args(__doc__, 10)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        storage = world_lake(args.storage, Path(tmp), args.world_pairs)
        trainer = sft_trainer(storage, Path(tmp) / "run", batch_size=args.batch, caption_batch_size=args.batch,
                              caption_warmup_steps=0, freeze_vision=True, unfreeze_vision_step=0, cache_encoded=True)
        steps = [trainer.next_batches() for _ in range(args.steps)]
        eager = trainer.model
        compiled = copy.deepcopy(eager)
        compile_decoder(compiled)

        def step(batches: list, share: bool, model: torch.nn.Module = eager) -> tuple[float, list[torch.Tensor]]:
            model.zero_grad(set_to_none=True)
            total = 0.0
            for batch in batches:
                logits, labels = packed_target_logits(model, batch, share_prefix=share)
                loss = sft_token_loss(logits, labels, packed_loss_weights(batch))
                loss.backward()
                total += float(loss.detach())
            return total, [p.grad.clone() for p in model.parameters() if p.grad is not None]

        (loss_a, grads_a), (loss_b, grads_b) = step(steps[0], True), step(steps[0], False)
        grad_diff = max(float((a - b).abs().max()) for a, b in zip(grads_a, grads_b))
        started = time.perf_counter()
        for batches in steps:
            step(batches, True, compiled)
        first_compiled = time.perf_counter() - started
        ways = {"whole": (False, eager), "shared": (True, eager), "compiled": (True, compiled)}
        seconds = {name: [] for name in ways}
        for _ in range(3):
            for name, (share, model) in ways.items():
                started = time.perf_counter()
                for batches in steps:
                    step(batches, share, model)
                seconds[name].append((time.perf_counter() - started) / len(steps))
        shared = sum(len(b["input_ids"]) * shared_prefix_length(b["input_ids"], b["attention_mask"],
                                                                 b["mm_token_type_ids"])
                     for batches in steps for b in batches)
        tokens = sum(int(b["attention_mask"].sum()) for batches in steps for b in batches)
    plain, once, fused = (min(seconds[name]) for name in ways)
    same = abs(loss_a - loss_b) <= 1e-5 * abs(loss_b) and grad_diff <= 1e-5
    print(f"per step ({args.batch} judgements + {args.batch} captions, {len(steps)} steps, best of 3): "
          f"whole sequences {plain:.3f} s, shared opening once {once:.3f} s (ratio {plain / once:.2f}), "
          f"and with compiled layers {fused:.3f} s (ratio {plain / fused:.2f}; compiling: the first "
          f"pass took {first_compiled - len(steps) * fused:.0f} s more); "
          f"shared tokens {shared / tokens:.0%} of {tokens / len(steps):.0f} per step; "
          f"loss difference {abs(loss_a - loss_b):.2e}, largest gradient difference {grad_diff:.2e}; same: {same}")


if __name__ == "__main__":
    main()
