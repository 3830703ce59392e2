"""The lake the bench scripts measure on when not given one (shared by the bench/ scripts)."""

from __future__ import annotations

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
