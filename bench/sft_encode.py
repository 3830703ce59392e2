"""SFT batch encoding: `encode_sft_batch` with the trainer's target cache (each judgement tokenised and
split into parts once) against encoding from scratch, on the same batches in the same run; one
training step on those batches is timed too, to show the share of a step that encoding is.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/sft_encode.py [--storage LAKE] [--batches 8] [--batch 32]

Without --storage a 300-pair (--world-pairs) world lake is built in a temp dir (world → curate → principles →
coldstart). Judge batches carry params.yaml's loss weights (verdicts ×5) and caption batches go with
them, as in an SFT step; the cached pass runs after one pass has filled the cache (from the second
epoch on every target is a hit). Prints seconds per step of encoding both ways and the ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from editr1.training.data import encode_sft_batch

from _lake import sft_trainer, world_lake  # bench/_lake.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", type=Path, help="A lake with rrm/trajectories.parquet (default: build one).")
    parser.add_argument("--batches", type=int, default=8, help="Steps' worth of batches encoded each way.")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--world-pairs", type=int, default=300, help="Size of the lake built without --storage.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        storage = world_lake(args.storage, Path(tmp), args.world_pairs)
        trainer = sft_trainer(storage, Path(tmp) / "run", batch_size=args.batch, caption_batch_size=args.batch)
        cfg = trainer.cfg
        judge, captions = trainer.train_examples, trainer.caption_examples
        steps = [(judge[i * args.batch:(i + 1) * args.batch], captions[i * args.batch:(i + 1) * args.batch])
                 for i in range(args.batches)]
        steps = [(j, c) for j, c in steps if j and c]
        weights = dict(description_weight=cfg.description_weight, verdict_weight=cfg.verdict_weight,
                       finding_weight=cfg.finding_weight)

        def encode(cache: dict | None) -> tuple[float, list]:
            started = time.perf_counter()
            out = [[encode_sft_batch(trainer.processor, j, **weights, target_cache=cache),
                    encode_sft_batch(trainer.processor, c, target_cache=cache)] for j, c in steps]
            return (time.perf_counter() - started) / len(steps), out

        plain, batches = encode(None)
        cache: dict = {}
        encode(cache)
        cached, again = encode(cache)
        same = all(torch.equal(a[k], b[k]) for x, y in zip(batches, again) for a, b in zip(x, y) for k in a)
        started = time.perf_counter()
        for step in batches:
            trainer.train_step(step)
        train = (time.perf_counter() - started) / len(batches)
    print(f"per step ({args.batch} judgements + {args.batch} captions, {len(steps)} steps): encoding {plain:.3f} s, "
          f"with the target cache {cached:.3f} s; ratio {plain / cached:.2f}; same batches: {same}; "
          f"train step {train:.3f} s (encoding + step: {(plain + train) / (cached + train):.2f}x the steps/s)")


if __name__ == "__main__":
    main()
