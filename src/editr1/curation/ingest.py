"""The `curate` stage: add one preference batch to the lake.

    add_batch("incoming/b1", storage=Path("storage"), cfg=CurateConfig()) -> AddSummary

Validate every row and image → store images by sha256 → compute context/pair ids → drop exact and
A/B-swapped duplicates (within the batch and against the lake) → assign splits by context →
stage Parquet (pairs, votes, quarantine) + manifest → publish with one rename under the lake lock.
Idempotent (a batch whose pairs file was already ingested adds nothing), atomic (a crash before
the rename leaves the lake as it was), safe with concurrent writers (file lock around the commit).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from editr1 import schemas
from editr1.config import CurateConfig
from editr1.curation.ids import context_id as make_context_id
from editr1.curation.ids import pair_id as make_pair_id
from editr1.curation.source import BatchSource, PathRejected, RawRow
from editr1.curation.splits import assign_splits, check_ratios
from editr1.curation.validate import Rejected, RowFields, check_fields, check_image
from editr1.lake.catalog import BATCHES_DIR, batch_dirs, connect_catalog, write_catalog_file
from editr1.lake.objects import ObjectStore, open_object_store, sha256_hex
from editr1.lake.remote import read_uri_bytes
from editr1.lake.tables import write_parquet_atomic
from editr1.lake.transaction import lake_lock, publish, staged_directory

SIDECARS = ("scene_graphs.jsonl", "truth.jsonl")


@dataclass
class AddSummary:
    batch_id: str
    batch_key: str
    rows: int
    added: int  # new curated pairs
    votes: int  # accepted judgements (new votes)
    duplicates: int  # rows removed as exact or A/B-swapped duplicates (also in quarantine)
    conflicts: int  # touched pairs whose votes disagree (across annotators and batches)
    quarantined: int  # rows in quarantine from this add (all reasons, duplicates included)
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)  # new pairs per split
    already_ingested: bool = False
    fingerprint: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Vote:
    row: int
    pair_id: str
    context_id: str
    source_sha: str
    x_sha: str
    y_sha: str
    vote: str  # x | y | tie
    swapped: bool  # edit_a was the larger sha
    annotator: str
    instruction: str
    category: str | None


class _ImageChecker:
    """Reads, hashes, validates and stores each distinct image reference once."""

    def __init__(self, source: BatchSource, store: ObjectStore, cfg: CurateConfig):
        self.source, self.store, self.cfg = source, store, cfg
        self.resolved: dict[str, str | Rejected] = {}  # image field value → location or rejection
        self.cache: dict[str, str | Rejected] = {}  # location → sha or rejection

    def _resolve(self, ref: str) -> str | Rejected:
        hit = self.resolved.get(ref)
        if hit is None:
            try:
                hit = self.source.resolve(ref)
            except PathRejected as err:
                hit = Rejected(err.reason, str(err))
            except ValueError as err:
                hit = Rejected("bad_path", str(err))
            self.resolved[ref] = hit
        return hit

    def prefetch(self, refs: Iterable[str]) -> None:
        """Checks and stores every distinct image once, on `cfg.io_workers` threads (decoding,
        hashing and file I/O release the GIL; creating object files dominates on local disks)."""
        todo = {}
        for ref in refs:
            loc = self._resolve(ref)
            if isinstance(loc, str) and loc not in self.cache:
                todo[loc] = ref
        if self.cfg.io_workers <= 1 or len(todo) < 2:
            for loc, ref in todo.items():
                self.cache[loc] = self._check(ref, loc)
            return
        with ThreadPoolExecutor(max_workers=self.cfg.io_workers) as pool:
            for loc, result in zip(todo, pool.map(lambda item: self._check(item[1], item[0]), todo.items())):
                self.cache[loc] = result

    def sha(self, ref: str) -> str:
        loc = self._resolve(ref)
        if isinstance(loc, Rejected):
            raise loc
        hit = self.cache.get(loc)
        if hit is None:
            hit = self.cache[loc] = self._check(ref, loc)
        if isinstance(hit, Rejected):
            raise hit
        return hit

    def _check(self, ref: str, resolved: str) -> str | Rejected:
        try:
            data = self.source.read(resolved)
        except (FileNotFoundError, IsADirectoryError):
            return Rejected("missing_file", f"image not found: {ref}")
        except Exception as err:  # noqa: BLE001 — e.g. NoSuchKey on S3
            if "NoSuchKey" in type(err).__name__ or "NoSuchKey" in str(err) or "404" in str(err):
                return Rejected("missing_file", f"image not found: {ref}")
            raise
        try:
            check_image(data, self.cfg)
        except Rejected as err:
            return Rejected(err.reason, f"{ref}: {err.detail}")
        return self.store.put(data, sha256_hex(data))


def _batch_key(batch_id: str, fingerprint: str, root: Path) -> str:
    key = re.sub(r"[^A-Za-z0-9._-]+", "_", batch_id).strip("._") or "batch"
    if (root / BATCHES_DIR / key).exists():
        key = f"{key}-{fingerprint[:10]}"
    return key


def _find_ingested(root: Path, fingerprint: str) -> dict | None:
    for directory in batch_dirs(root):
        manifest = json.loads((directory / "manifest.json").read_text())
        if manifest.get("fingerprint") == fingerprint:
            return manifest
    return None


def _quarantine_row(batch_id: str, raw: RawRow, reason: str, detail: str) -> dict:
    text = raw.raw if raw.data is None else json.dumps(raw.data, sort_keys=True, default=str)
    return {"batch_id": batch_id, "row_index": raw.index, "reason": reason, "detail": detail, "raw": text}


def add_batch(location: str | Path, storage: Path, cfg: CurateConfig, batch_id: str | None = None) -> AddSummary:
    """Validates, deduplicates and commits one preference batch; see the module docstring."""
    started = time.perf_counter()
    check_ratios(cfg.split_ratios)
    storage = Path(storage)
    source = BatchSource(location, cfg.s3_endpoint_url)
    raw_rows = source.rows()
    first = next((r.data for r in raw_rows if r.data and isinstance(r.data.get("batch_id"), str)), None)
    batch_id = batch_id or (first["batch_id"] if first else None) or source.name

    done = _find_ingested(storage, source.fingerprint)
    if done is not None:
        return AddSummary(done["batch_id"], done["batch_key"], len(raw_rows), 0, 0, 0, 0, 0,
                          already_ingested=True, fingerprint=source.fingerprint,
                          seconds=time.perf_counter() - started)

    store = open_object_store(cfg.object_store, storage, cfg.s3_endpoint_url or None)
    images = _ImageChecker(source, store, cfg)
    quarantine: list[dict] = []
    votes: list[_Vote] = []
    checked: list[tuple[RawRow, RowFields]] = []
    for raw in raw_rows:
        if raw.data is None:
            quarantine.append(_quarantine_row(batch_id, raw, raw.error or "bad_json", raw.detail or ""))
            continue
        try:
            checked.append((raw, check_fields(raw.data, cfg)))
        except Rejected as err:
            quarantine.append(_quarantine_row(batch_id, raw, err.reason, err.detail))
    images.prefetch(ref for _, f in checked for ref in (f.source_image, f.edit_a, f.edit_b))
    for raw, fields in checked:
        try:
            votes.append(_to_vote(raw, fields, images))
        except Rejected as err:
            quarantine.append(_quarantine_row(batch_id, raw, err.reason, err.detail))

    by_index = {r.index: r for r in raw_rows}
    with lake_lock(storage):
        if (done := _find_ingested(storage, source.fingerprint)) is not None:  # a concurrent twin won
            return AddSummary(done["batch_id"], done["batch_key"], len(raw_rows), 0, 0, 0, 0, 0,
                              already_ingested=True, fingerprint=source.fingerprint,
                              seconds=time.perf_counter() - started)
        existing_votes, existing_pairs, existing_splits = _lake_state(storage, {v.pair_id for v in votes})
        kept, dup_rows = _dedup(votes, existing_votes)
        duplicates = 0
        for vote, reason, detail in dup_rows:
            duplicates += reason == "duplicate_row"
            quarantine.append(_quarantine_row(batch_id, by_index[vote.row], reason, detail))
        splits = assign_splits(sorted({v.context_id for v in kept}), existing_splits,
                               cfg.split_ratios, cfg.split_salt)
        new_pairs: dict[str, _Vote] = {}
        for vote in kept:
            if vote.pair_id not in existing_pairs and vote.pair_id not in new_pairs:
                new_pairs[vote.pair_id] = vote
        conflicts = _count_conflicts(kept, existing_votes)
        key = _batch_key(batch_id, source.fingerprint, storage)
        quarantine.sort(key=lambda q: q["row_index"])
        summary = AddSummary(
            batch_id=batch_id, batch_key=key, rows=len(raw_rows), added=len(new_pairs), votes=len(kept),
            duplicates=duplicates, conflicts=conflicts, quarantined=len(quarantine),
            quarantined_by_reason=dict(sorted(Counter(q["reason"] for q in quarantine).items())),
            splits=dict(sorted(Counter(splits[v.context_id] for v in new_pairs.values()).items())),
            fingerprint=source.fingerprint,
        )
        with staged_directory(storage) as staged:
            _write_tables(staged, batch_id, new_pairs, kept, quarantine, splits)
            _copy_sidecars(source, staged)
            summary.seconds = time.perf_counter() - started
            manifest = {**summary.to_dict(), "source": str(location),
                        "added_at": datetime.now(UTC).isoformat(timespec="seconds")}
            (staged / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
            publish(staged, storage / BATCHES_DIR / key)
        write_catalog_file(storage)
    summary.seconds = time.perf_counter() - started
    return summary


def _to_vote(raw: RawRow, fields: RowFields, images: _ImageChecker) -> _Vote:
    source_sha = images.sha(fields.source_image)
    sha_a = images.sha(fields.edit_a)
    sha_b = images.sha(fields.edit_b)
    if sha_a == sha_b:
        raise Rejected("identical_edits", "edit_a and edit_b are the same image bytes")
    ctx = make_context_id(source_sha, fields.instruction)
    x_sha, y_sha = sorted((sha_a, sha_b))
    swapped = sha_a != x_sha
    vote = "tie" if fields.preference == "tie" else ("x" if (fields.preference == "a") != swapped else "y")
    return _Vote(raw.index, make_pair_id(ctx, sha_a, sha_b), ctx, source_sha, x_sha, y_sha, vote, swapped,
                 fields.annotator, fields.instruction, fields.category)


def _lake_state(storage: Path, pair_ids: set[str]) -> tuple[dict[tuple[str, str], tuple[str, str]], set[str], dict[str, str]]:
    """Existing votes {(pair, annotator): (vote, batch)}, existing pair ids, context → split."""
    con = connect_catalog(storage)
    try:
        con.register("touched", pa.table({"pair_id": sorted(pair_ids)}))
        votes = con.execute("SELECT v.pair_id, v.annotator, v.vote, v.batch_id FROM votes v "
                            "JOIN touched USING (pair_id)").fetchall()
        pairs = {r[0] for r in con.execute("SELECT p.pair_id FROM pair_index p JOIN touched USING (pair_id)").fetchall()}
        splits = dict(con.execute("SELECT DISTINCT context_id, split FROM pair_index").fetchall())
    finally:
        con.close()
    return {(p, a): (v, b) for p, a, v, b in votes}, pairs, splits


def _dedup(votes: list[_Vote], existing: dict) -> tuple[list[_Vote], list[tuple[_Vote, str, str]]]:
    """One judgement per (pair, annotator): repeats are duplicates, contradictions are conflicts."""
    seen: dict[tuple[str, str], _Vote] = {}
    kept, rejected = [], []
    for vote in votes:
        key = (vote.pair_id, vote.annotator)
        if key in existing:
            old_vote, old_batch = existing[key]
            if old_vote == vote.vote:
                rejected.append((vote, "duplicate_row", f"same judgement already in batch {old_batch}"))
            else:
                rejected.append((vote, "annotator_conflict",
                                 f"annotator {vote.annotator} judged this pair differently in batch {old_batch}"))
            continue
        if key in seen:
            first = seen[key]
            if first.vote == vote.vote:
                how = "A/B-swapped duplicate" if first.swapped != vote.swapped else "exact duplicate"
                rejected.append((vote, "duplicate_row", f"{how} of row {first.row}"))
            else:
                rejected.append((vote, "annotator_conflict",
                                 f"annotator {vote.annotator} judged this pair differently in row {first.row}"))
            continue
        seen[key] = vote
        kept.append(vote)
    return kept, rejected


def _count_conflicts(kept: list[_Vote], existing: dict) -> int:
    labels: dict[str, set[str]] = {}
    for (pair, _annotator), (vote, _batch) in existing.items():
        labels.setdefault(pair, set()).add(vote)
    for vote in kept:
        labels.setdefault(vote.pair_id, set()).add(vote.vote)
    touched = {v.pair_id for v in kept}
    return sum(1 for pair in touched if len(labels[pair]) > 1)


def _write_tables(staged: Path, batch_id: str, new_pairs: dict[str, _Vote], kept: list[_Vote],
                  quarantine: list[dict], splits: dict[str, str]) -> None:
    pairs_rows = [{"pair_id": v.pair_id, "context_id": v.context_id, "source_sha": v.source_sha,
                   "x_sha": v.x_sha, "y_sha": v.y_sha, "instruction": v.instruction, "category": v.category,
                   "split": splits[v.context_id], "batch_id": batch_id}
                  for v in sorted(new_pairs.values(), key=lambda v: v.pair_id)]
    vote_rows = [{"pair_id": v.pair_id, "annotator": v.annotator, "vote": v.vote, "batch_id": batch_id,
                  "row_index": v.row} for v in kept]
    write_parquet_atomic(pa.Table.from_pylist(pairs_rows, schema=schemas.PAIR_INDEX), staged / "pairs.parquet")
    write_parquet_atomic(pa.Table.from_pylist(vote_rows, schema=schemas.VOTES), staged / "votes.parquet")
    write_parquet_atomic(pa.Table.from_pylist(quarantine, schema=schemas.QUARANTINE), staged / "quarantine.parquet")


def _copy_sidecars(source: BatchSource, staged: Path) -> None:
    """World batches carry scene graphs and truth beside the pairs; keep them with the batch."""
    for name in SIDECARS:
        try:
            data = read_uri_bytes(source._join(name), source.endpoint_url)
        except Exception:  # noqa: BLE001 — sidecars are optional
            continue
        (staged / name).write_bytes(data)
