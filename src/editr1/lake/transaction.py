"""Atomic, concurrent-safe commits to the local lake.

A writer stages everything in `<root>/.staging/<uuid>/` and publishes it with one directory rename
under an exclusive file lock; a crash before the rename leaves the lake exactly as it was (the
orphaned staging directory is ignored by readers and swept by the next writer).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

STALE_STAGING_SECONDS = 3600


@contextlib.contextmanager
def lake_lock(root: Path) -> Iterator[None]:
    """Exclusive lock on the lake (blocks until free). Processes serialise their commits here."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def staged_directory(root: Path) -> Iterator[Path]:
    """A fresh staging directory that is removed unless the caller moved it into place."""
    staging = root / ".staging"
    staging.mkdir(parents=True, exist_ok=True)
    _sweep_stale(staging)
    path = staging / uuid.uuid4().hex
    path.mkdir()
    try:
        yield path
    finally:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)


def publish(staged: Path, final: Path) -> None:
    """Moves a staged directory into place in one rename (atomic on one filesystem)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        raise FileExistsError(f"refusing to overwrite {final}")
    os.rename(staged, final)


def _sweep_stale(staging: Path) -> None:
    now = time.time()
    for child in staging.iterdir():
        with contextlib.suppress(OSError):
            if now - child.stat().st_mtime > STALE_STAGING_SECONDS:
                shutil.rmtree(child, ignore_errors=True)
