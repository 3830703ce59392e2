"""RRM evaluation throughput: `evaluate.workers: 2` (each (model, split) job in its own process, one
thread each) against one process scoring the same jobs one after the other, in the same run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/eval_workers.py [--storage LAKE] [--models 3] [--pairs 48]

Without --storage a 300-pair (--world-pairs) world lake is built in a temp dir (world → curate → principles, no
training). The models are tiny RRMs from different seeds, untrained, so every judgement runs to
--max-new-tokens (the work of a trained model's ~120-token judgement). Prints seconds for each and
the ratio one / two (ideal 2 on an idle 2-core machine); the scores are checked equal.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from editr1.coldstart.checklists import load_principles
from editr1.config import EvaluateConfig
from editr1.evaluation.report import score_models
from editr1.lake.catalog import curated_pairs
from editr1.lake.objects import open_object_store
from editr1.models import save_rrm, tiny_rrm

from _lake import world_lake  # bench/_lake.py

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", type=Path, help="A lake with rrm/principles.parquet (default: build one).")
    parser.add_argument("--models", type=int, default=3, help="Models scored (the demo scores sft, gcpo, control).")
    parser.add_argument("--pairs", type=int, default=48, help="Test and val pairs each.")
    parser.add_argument("--max-new-tokens", type=int, default=120)
    parser.add_argument("--world-pairs", type=int, default=300, help="Size of the lake built without --storage.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        storage = world_lake(args.storage, Path(tmp), args.world_pairs)
        store = open_object_store("", storage)
        checklists = load_principles(storage / "rrm" / "principles.parquet")
        test = curated_pairs(storage, "test").to_pylist()[: args.pairs]
        calib = curated_pairs(storage, "val").to_pylist()[: args.pairs]
        models = {}
        for i in range(args.models):
            torch.manual_seed(i)
            model, processor = tiny_rrm(["describe the images, then check: yes no <score>5</score>"] * 8,
                                        Path(tmp) / f"tok{i}")
            with torch.no_grad():
                for param in model.parameters():
                    param.add_(0.1 * i * torch.randn_like(param))
            save_rrm(model, processor, Path(tmp) / f"m{i}")
            models[f"m{i}"] = Path(tmp) / f"m{i}"
        cfg = EvaluateConfig(max_new_tokens=args.max_new_tokens)
        times, results = {}, {}
        for workers in (1, 2):
            started = time.perf_counter()
            results[workers] = score_models(EvaluateConfig(**{**cfg.__dict__, "workers": workers}), models, test,
                                            calib, store, checklists)
            times[workers] = time.perf_counter() - started
    same = results[1] == results[2]
    print(f"scoring {args.models} models x ({len(test)} test + {len(calib)} val pairs), {args.max_new_tokens} new "
          f"tokens: 1 process {times[1]:.1f} s, 2 workers {times[2]:.1f} s; ratio {times[1] / times[2]:.2f} "
          f"(ideal 2.0); same scores: {same}")


if __name__ == "__main__":
    main()
