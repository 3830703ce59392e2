"""Lineage tags for training runs: which curated batches, which cold-start data, which code and
DVC state produced a model."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from editr1.curation.listing import list_batches


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def lineage_tags(storage: Path, trajectories: Path | None = None) -> dict[str, str]:
    """Tags: curated batch ids, the trajectories' sha256, the git commit and the dvc.lock hash."""
    tags = {"curated_batches": ",".join(m["batch_id"] for m in list_batches(storage))[:4000]}
    if trajectories is not None and trajectories.exists():
        tags["coldstart_hash"] = file_hash(trajectories)
    commit = _git("rev-parse", "HEAD")
    if commit:
        tags["git_commit"] = commit
    if Path("dvc.lock").exists():
        tags["dvc_lock_hash"] = file_hash(Path("dvc.lock"))
    return tags
