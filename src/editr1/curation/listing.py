"""What is in the lake: batch manifests, per-batch split and quarantine counts; finding incoming
batches in a folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from editr1.curation.source import PAIR_FILES
from editr1.lake.catalog import batch_dirs, connect_catalog


def list_batches(storage: Path) -> list[dict[str, Any]]:
    """One manifest per committed batch, oldest first."""
    manifests = [json.loads((d / "manifest.json").read_text()) for d in batch_dirs(storage)]
    return sorted(manifests, key=lambda m: (m.get("added_at", ""), m["batch_key"]))


def show_batch(storage: Path, batch: str) -> dict[str, Any]:
    """A batch's manifest plus what the catalogue says now (splits, labels, quarantine reasons)."""
    matches = [m for m in list_batches(storage) if batch in (m["batch_id"], m["batch_key"])]
    if not matches:
        raise KeyError(f"no batch {batch!r} in {storage}")
    manifest = matches[-1]
    con = connect_catalog(storage)
    try:
        bid = manifest["batch_id"]
        splits = dict(con.execute("SELECT split, count(*) FROM pairs WHERE batch_id = ? GROUP BY split ORDER BY split",
                                  [bid]).fetchall())
        labels = dict(con.execute("SELECT label, count(*) FROM pairs WHERE batch_id = ? GROUP BY label ORDER BY label",
                                  [bid]).fetchall())
        agreement = con.execute("SELECT avg(agreement) FROM pairs WHERE batch_id = ?", [bid]).fetchone()[0]
        reasons = dict(con.execute("SELECT reason, count(*) FROM quarantine WHERE batch_id = ? GROUP BY reason "
                                   "ORDER BY reason", [bid]).fetchall())
    finally:
        con.close()
    return {**manifest, "current": {"pairs_by_split": splits, "pairs_by_label": labels,
                                    "mean_agreement": agreement, "quarantine": reasons}}


def find_batches(incoming: Path) -> list[Path]:
    """Folders under `incoming` (itself included) that hold a pairs file, sorted by path."""
    incoming = Path(incoming)
    found = {p.parent for name in PAIR_FILES for p in incoming.rglob(name)}
    return sorted(found)
