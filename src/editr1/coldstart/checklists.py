"""The `principles` stage: one checklist of ~10 yes/no principles per curated context.

    run_principles(cfg, storage, teacher, store, out) -> summary dict

Incremental: contexts that already have a checklist from the same teacher and prompt version in
`out` are kept as they are; only new contexts are sent to the teacher.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from editr1 import schemas
from editr1.config import PrinciplesConfig
from editr1.lake.catalog import connect_catalog
from editr1.lake.images import ImageLoader
from editr1.lake.objects import ObjectStore
from editr1.lake.tables import read_parquet, write_parquet_atomic
from editr1.rrm.items import Context
from editr1.rrm.principles import Principle
from editr1.rrm.prompt import PROMPT_VERSION
from editr1.teachers.base import Teacher


def curated_contexts(storage: Path, splits: tuple[str, ...]) -> list[dict[str, Any]]:
    """Distinct contexts of the curated pairs in the given splits, ordered by context_id."""
    con = connect_catalog(storage)
    try:
        rows = con.sql(
            "SELECT context_id, any_value(source_sha) AS source_sha, any_value(instruction) AS instruction, "
            "any_value(category) AS category, any_value(split) AS split FROM pairs "
            "WHERE list_contains($splits, split) GROUP BY context_id ORDER BY context_id",
            params={"splits": list(splits)},
        ).to_arrow_table().to_pylist()
    finally:
        con.close()
    return rows


def load_principles(path: Path) -> dict[str, list[Principle]]:
    """context_id → its checklist."""
    table = read_parquet(path)
    return {row["context_id"]: [Principle(p["question"], p["category"]) for p in row["principles"]]
            for row in table.to_pylist()}


def run_principles(cfg: PrinciplesConfig, storage: Path, teacher: Teacher, store: ObjectStore,
                   out: Path) -> dict[str, Any]:
    """Writes `out` (schemas.PRINCIPLES) for every curated context of `cfg.splits`."""
    started = time.perf_counter()
    contexts = curated_contexts(storage, cfg.splits)
    kept: dict[str, dict] = {}
    if out.exists():
        for row in read_parquet(out).to_pylist():
            if row["teacher"] == teacher.name and row["prompt_version"] == PROMPT_VERSION:
                kept[row["context_id"]] = row
    todo = [c for c in contexts if c["context_id"] not in kept]
    images = ImageLoader(store)
    for start in range(0, len(todo), cfg.batch_size):
        chunk = todo[start:start + cfg.batch_size]
        batch = [Context(c["context_id"], c["instruction"], images(c["source_sha"]), c["source_sha"], c["category"])
                 for c in chunk]
        for ctx_row, checklist in zip(chunk, teacher.principles(batch)):
            kept[ctx_row["context_id"]] = {
                **ctx_row, "principles": [p.to_dict() for p in checklist],
                "teacher": teacher.name, "prompt_version": PROMPT_VERSION,
            }
    wanted = {c["context_id"] for c in contexts}
    rows = [kept[cid] for cid in sorted(wanted)]
    write_parquet_atomic(pa.Table.from_pylist(rows, schema=schemas.PRINCIPLES), out)
    per_context = [len(r["principles"]) for r in rows]
    return {
        "contexts": len(rows), "new": len(todo), "reused": len(rows) - len(todo),
        "mean_principles": sum(per_context) / len(per_context) if per_context else 0.0,
        "teacher": teacher.name, "usage": teacher.usage.to_dict(),
        "seconds": round(time.perf_counter() - started, 3),
    }
