"""The lake the bench scripts measure on when not given one (shared by the bench/ scripts)."""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def world_lake(path: Path | None, tmp: Path, pairs: int = 300) -> Path:
    """``path`` when given, else a ``pairs``-pair world lake built under ``tmp`` with params.yaml
    (world → curate → principles → coldstart, no training)."""
    if path is not None:
        return path
    from editr1.demo import run_demo

    storage = tmp / "lake"
    run_demo(storage, seed=0, pairs=pairs, params_path=ROOT / "params.yaml", train=False)
    return storage


def sft_trainer(storage: Path, out: Path, **overrides):
    """An `SFTTrainer` on ``storage``'s cold-start trajectories with params.yaml's sft settings, one
    process, no vision pre-training to speak of and no evaluation, ``overrides`` on top; set up."""
    import dataclasses

    from editr1.config import load_config
    from editr1.training.sft import SFTConfig, SFTTrainer

    cfg = dataclasses.replace(load_config(SFTConfig, "sft", ROOT / "params.yaml"), workers=1, vision_pretrain_steps=1,
                              vision_pretrain_min_acc=0.0, eval_every=0, **overrides)
    trainer = SFTTrainer(cfg, storage, storage / "rrm" / "trajectories.parquet", storage / "rrm" / "principles.parquet",
                         out)
    trainer.setup(resume=False)
    return trainer


def sft_bench_args(doc: str, steps: int, steps_help: str = "Steps timed each way, per round.") -> argparse.Namespace:
    """The SFT bench scripts' shared command line: --storage, --steps (default ``steps``), --batch,
    --world-pairs; the description is the first line of ``doc``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--storage", type=Path, help="A lake with rrm/trajectories.parquet (default: build one).")
    parser.add_argument("--steps", type=int, default=steps, help=steps_help)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--world-pairs", type=int, default=300, help="Size of the lake built without --storage.")
    return parser.parse_args()
