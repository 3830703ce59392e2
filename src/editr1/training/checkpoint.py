"""Checkpoints that resume a run exactly: atomic writes, checksums, RNG and data-order state.

    from editr1.training.checkpoint import (ResumableSampler, capture_rng, latest_checkpoint,
                                            load_checkpoint, restore_rng, save_checkpoint)
    sampler = ResumableSampler(n=len(data), seed=0, batch_size=8)
    if (path := latest_checkpoint(run_dir)) is not None:       # newest checkpoint that verifies
        state = load_checkpoint(path)
        model.load_state_dict(state["model"]); optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"]); sampler.load_state_dict(state["sampler"])
        restore_rng(state["rng"]); step = state["step"]
    ...
    save_checkpoint(run_dir, step, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                    "scheduler": scheduler.state_dict(), "sampler": sampler.state_dict(),
                                    "rng": capture_rng(), "step": step})

Layout: `run_dir/step-00000012/{state.pt, manifest.json}`. manifest.json records the sha256 and
size of every other file in the checkpoint (recursively), so a truncated or corrupted file is
detected. A save is staged in `run_dir/.tmp-step-…` (files fsynced), then renamed into place, so a
crash mid-save leaves at most a temp directory, which `latest_checkpoint` ignores with a warning
and the next save removes. One writer per run directory (rank 0 in a multi-process run).

What "exact" needs: restore RNG state LAST (after building the model, optimizer and scheduler,
which may draw random numbers), and keep any other random source (a numpy Generator, a
torch.Generator) in the state too — `capture_rng` only covers the global generators.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
_STEP_DIR = re.compile(r"^step-(\d{8,})$")
_TMP_PREFIX = ".tmp-step-"


# --------------------------------------------------------------------------- files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _files_of(directory: Path) -> list[Path]:
    """Every regular file under `directory` except the manifest, as sorted relative paths."""
    return sorted(p.relative_to(directory) for p in directory.rglob("*")
                  if p.is_file() and p.relative_to(directory) != Path(MANIFEST_FILE))


def step_dir_name(step: int) -> str:
    """The directory name of the checkpoint at `step`: step-00000012."""
    return f"step-{step:08d}"


def _step_dirs(directory: Path) -> list[tuple[int, Path]]:
    """Checkpoint directories under `directory` (any validity), sorted by step, oldest first."""
    if not directory.is_dir():
        return []
    found = []
    for child in directory.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def _temp_dirs(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.startswith(_TMP_PREFIX))


# --------------------------------------------------------------------------- save / verify / load


def save_checkpoint(directory: Path, step: int, state: dict[str, Any], keep: int = 2,
                    write_extra: Callable[[Path], None] | None = None) -> Path:
    """Write `state` as the checkpoint of `step` under `directory`, atomically; return its path.

    directory: the run's checkpoint directory (created if missing); step: >= 0; state: anything
    torch.save can pickle — model / optimizer / scheduler state_dicts, `capture_rng()`, the
    sampler's `state_dict()`, trainer extras. write_extra(staging_dir), if given, writes more files
    (e.g. `model.save_pretrained(staging_dir / "model")`); they are fsynced and checksummed too.
    Afterwards only the `keep` (>= 1) newest checkpoints are kept. Checkpoints with a step ABOVE
    `step` belong to an abandoned timeline (the run resumed from an older checkpoint, typically
    because the newer one was corrupt) and are removed with a warning, so `latest_checkpoint`
    always means this run's newest. A checkpoint already at `step` is replaced. Leftover temp
    directories of crashed saves are removed.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in _temp_dirs(directory):
        log.warning("removing leftover temp directory of an interrupted save: %s", stale)
        shutil.rmtree(stale, ignore_errors=True)

    final = directory / step_dir_name(step)
    staging = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{step:08d}-", dir=directory))
    try:
        staging.chmod(0o755)  # mkdtemp makes it 0700; a checkpoint is readable like any output
        with (staging / STATE_FILE).open("wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        if write_extra is not None:
            write_extra(staging)
        files = {}
        for rel in _files_of(staging):
            path = staging / rel
            _fsync_file(path)
            files[rel.as_posix()] = {"sha256": _sha256(path), "size": path.stat().st_size}
        manifest = {"format": MANIFEST_FORMAT, "step": step, "files": files}
        with (staging / MANIFEST_FILE).open("w") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(staging)
        if final.exists():
            # A rename cannot replace a non-empty directory: move the old one aside (as a temp
            # directory, so a crash between the two renames leaves nothing latest_checkpoint reads).
            trash = directory / f"{_TMP_PREFIX}{step:08d}-replaced"
            shutil.rmtree(trash, ignore_errors=True)
            final.rename(trash)
            staging.rename(final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            staging.rename(final)
        _fsync_dir(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    older = []
    for other_step, path in _step_dirs(directory):
        if other_step > step:
            log.warning("removing checkpoint %s: newer than the step just saved (%d), from an "
                        "abandoned run", path, step)
            shutil.rmtree(path, ignore_errors=True)
        elif other_step < step:
            older.append(path)
    for path in older[: max(0, len(older) - (keep - 1))]:
        shutil.rmtree(path, ignore_errors=True)
    return final


def verify_checkpoint(path: Path) -> str | None:
    """Why the checkpoint at `path` is unusable, or None when every file matches its manifest."""
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        return "no manifest.json (partial save)"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError, TypeError) as e:
        return f"unreadable manifest.json ({e})"
    if STATE_FILE not in files:
        return f"manifest lists no {STATE_FILE}"
    for name, entry in files.items():
        file = path / name
        if not file.is_file():
            return f"missing file {name}"
        if file.stat().st_size != entry["size"]:
            return f"{name} has {file.stat().st_size} bytes, manifest says {entry['size']} (truncated?)"
        if _sha256(file) != entry["sha256"]:
            return f"{name} does not match its sha256 (corrupt)"
    return None


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest checkpoint under `directory` that verifies against its manifest, or None.

    A corrupt or partial checkpoint (no manifest, checksum or size mismatch, missing file) is
    skipped with a logged warning and the next older one is tried; leftover temp directories of
    interrupted saves are never candidates (a warning says they are there).
    """
    directory = Path(directory)
    for temp in _temp_dirs(directory):
        log.warning("ignoring leftover temp directory of an interrupted save: %s", temp)
    for _, path in reversed(_step_dirs(directory)):
        problem = verify_checkpoint(path)
        if problem is None:
            return path
        log.warning("skipping checkpoint %s: %s", path, problem)
    return None


def load_checkpoint(path: Path, map_location: str | torch.device | None = "cpu",
                    verify: bool = True) -> dict[str, Any]:
    """The state dict saved by `save_checkpoint` at the checkpoint directory `path`.

    Uses torch.load(weights_only=False): the state holds numpy and python RNG states and trainer
    extras, which the weights-only unpickler refuses. That runs arbitrary pickled code, so load
    only checkpoints this platform wrote (the manifest check guards against corruption, not
    against a malicious file). map_location defaults to "cpu" so a checkpoint loads on any
    machine; `optimizer.load_state_dict` moves its state to the parameters' device.
    verify: check the manifest first (raises ValueError on a corrupt or partial checkpoint).
    """
    path = Path(path)
    if verify and (problem := verify_checkpoint(path)) is not None:
        raise ValueError(f"checkpoint {path} is unusable: {problem}")
    with (path / STATE_FILE).open("rb") as f:
        return torch.load(f, map_location=map_location, weights_only=False)


# --------------------------------------------------------------------------- RNG


def capture_rng() -> dict[str, Any]:
    """The global RNG states: torch CPU, numpy's legacy global, python `random`, and CUDA (all
    devices) when CUDA is available. Pass the result to `restore_rng`."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set the global RNG states from `capture_rng()`'s output. CUDA states are restored when the
    state has them and CUDA is available (a CPU checkpoint resumed on a GPU leaves CUDA as is)."""
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# --------------------------------------------------------------------------- data order


class ResumableSampler:
    """Batches of dataset indices over epochs, resumable at any batch.

    Each epoch is a permutation of range(n) drawn from numpy's default_rng([seed, epoch]), so the
    order depends only on (seed, epoch), never on other RNG use. Batches are consecutive slices of
    it; the last batch of an epoch is shorter when batch_size does not divide n, unless
    drop_last=True (then it is skipped). Batches never span two epochs.
    `state_dict()` is {epoch, position, n, seed, batch_size, drop_last}; the permutation itself is
    recomputed from (seed, epoch), and loading a state made for another n / seed / batch_size /
    drop_last raises ValueError (the remaining batches would silently differ).

        sampler = ResumableSampler(n=100, seed=0, batch_size=8)
        indices = sampler.next_batch()      # list[int]; or: for indices in sampler: ...
    """

    def __init__(self, n: int, seed: int, batch_size: int, drop_last: bool = False):
        if n < 1 or batch_size < 1:
            raise ValueError(f"need n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}")
        if drop_last and batch_size > n:
            raise ValueError(f"drop_last with batch_size {batch_size} > n {n} yields no batch")
        self.n = n
        self.seed = seed
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.epoch = 0
        self.position = 0  # index into the current epoch's permutation of the next batch's start
        self._order: np.ndarray | None = None
        self._order_epoch = -1

    @property
    def batches_per_epoch(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of indices in `epoch`: [n] int64."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def next_batch(self) -> list[int]:
        """The next batch of indices; advances to the next epoch at the end of one."""
        end_of_epoch = self.n - self.batch_size if self.drop_last else self.n - 1
        if self.position > end_of_epoch:
            self.epoch += 1
            self.position = 0
        if self._order_epoch != self.epoch:
            self._order = self.permutation(self.epoch)
            self._order_epoch = self.epoch
        assert self._order is not None
        batch = self._order[self.position : self.position + self.batch_size].tolist()
        self.position += len(batch)
        return batch

    def __iter__(self) -> Iterator[list[int]]:
        """Endless: yields next_batch() forever (the trainer counts steps)."""
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "n": self.n, "seed": self.seed,
                "batch_size": self.batch_size, "drop_last": self.drop_last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("n", "seed", "batch_size", "drop_last"):
            if state[key] != getattr(self, key):
                raise ValueError(f"sampler state was saved with {key}={state[key]!r}, "
                                 f"this sampler has {key}={getattr(self, key)!r}")
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
