"""SFT throughput: data parallel over two processes (`sft.workers: 2`) against one process, and the
packed vision attention against Qwen2.5-VL's per-image loop, each measured in the same run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/sft_workers.py [--storage LAKE] [--steps 40] [--batch 32]

Without --storage a 300-pair world lake is built in a temp dir (world → curate → principles →
coldstart, no training). Both SFT runs train the same tiny RRM from the same seed for --steps steps
(one thread per process, no evaluation) and report steps per second; the ratio two / one is the
speed-up (ideal 2 on an idle 2-core machine). The attention part times the vision tower's forward +
backward on one batch of images with each implementation (best of 5) and prints loop / packed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from editr1.training.sft import SFTConfig, SFTTrainer, run_sft

from _lake import world_lake  # bench/_lake.py

def sft_rate(cfg: SFTConfig, storage: Path, out: Path) -> float:
    metrics = run_sft(cfg, storage, storage / "rrm" / "trajectories.parquet", storage / "rrm" / "principles.parquet",
                      out, resume=False)
    return metrics["steps_per_second"]


def attention_times(cfg: SFTConfig, storage: Path, out: Path, batch: int) -> tuple[float, float]:
    from editr1.models.attention import use_packed_vision_attention
    from editr1.training.data import encode_sft_batch

    trainer = SFTTrainer(dataclasses.replace(cfg, workers=1), storage, storage / "rrm" / "trajectories.parquet",
                         storage / "rrm" / "principles.parquet", out)
    trainer.setup(resume=False)
    model = trainer.model
    encoded = encode_sft_batch(trainer.processor, trainer.train_examples[:batch])
    pixels, grid = encoded["pixel_values"], encoded["image_grid_thw"]

    def best(repeats: int = 5) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            out = model.model.visual(pixels, grid_thw=grid)
            (out.pooler_output if hasattr(out, "pooler_output") else out).sum().backward()
            times.append(time.perf_counter() - started)
        return min(times)

    model.set_attn_implementation({"vision_config": "sdpa"})
    loop = best()
    use_packed_vision_attention(model)
    return loop, best()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", type=Path, help="A lake with rrm/trajectories.parquet (default: build one).")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        storage = world_lake(args.storage, Path(tmp))
        cfg = SFTConfig(batch_size=args.batch, max_steps=args.steps, max_seconds=0.0, eval_pairs=0,
                        eval_loss_examples=8, checkpoint_every=0, log_every=0, warmup_steps=5)
        one = sft_rate(cfg, storage, Path(tmp) / "one")
        two = sft_rate(dataclasses.replace(cfg, workers=2), storage, Path(tmp) / "two")
        print(f"sft steps/s (batch {args.batch}, {args.steps} steps): 1 worker {one:.2f}, 2 workers {two:.2f}; "
              f"ratio {two / one:.2f} (ideal 2.0)")
        loop, packed = attention_times(cfg, storage, Path(tmp) / "attention", args.batch)
        print(f"vision tower fwd+bwd, {2 * args.batch} images: per-image loop {loop * 1e3:.1f} ms, packed "
              f"{packed * 1e3:.1f} ms; ratio loop/packed {loop / packed:.2f}")


if __name__ == "__main__":
    main()
