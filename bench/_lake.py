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
