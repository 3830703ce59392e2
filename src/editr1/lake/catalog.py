"""The DuckDB catalogue over all curated batches.

Views are defined over Parquet globs, so a batch becomes visible the moment its directory is
published. `connect_catalog(root)` gives an in-memory connection (safe for any number of
concurrent readers); `write_catalog_file(root)` persists the same views in
`<root>/curated/catalog.duckdb` for the data team's own DuckDB sessions.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import duckdb
import pyarrow as pa

from editr1 import schemas

BATCHES_DIR = Path("curated") / "batches"
CATALOG_FILE = Path("curated") / "catalog.duckdb"

_TABLES = {
    "pair_index": ("pairs.parquet", schemas.PAIR_INDEX),
    "votes": ("votes.parquet", schemas.VOTES),
    "quarantine": ("quarantine.parquet", schemas.QUARANTINE),
}

# Votes aggregate across every batch: the winner needs strictly more votes than the other edit
# and at least as many as "tie"; otherwise the pair is a tie. Agreement = share of the top vote.
_PAIRS_VIEW = """
CREATE OR REPLACE VIEW pairs AS
WITH first_seen AS (
    SELECT * FROM pair_index
    QUALIFY row_number() OVER (PARTITION BY pair_id ORDER BY batch_id) = 1
), tally AS (
    SELECT pair_id,
           count(*) AS votes,
           count(DISTINCT annotator) AS annotators,
           count(*) FILTER (WHERE vote = 'x') AS vx,
           count(*) FILTER (WHERE vote = 'y') AS vy,
           count(*) FILTER (WHERE vote = 'tie') AS vt
    FROM votes GROUP BY pair_id
)
SELECT f.pair_id, f.context_id, f.source_sha,
       CASE WHEN t.vy > t.vx AND t.vy >= t.vt THEN f.y_sha ELSE f.x_sha END AS chosen_sha,
       CASE WHEN t.vy > t.vx AND t.vy >= t.vt THEN f.x_sha ELSE f.y_sha END AS rejected_sha,
       f.instruction, f.category,
       CASE WHEN (t.vx > t.vy AND t.vx >= t.vt) OR (t.vy > t.vx AND t.vy >= t.vt)
            THEN 'chosen' ELSE 'tie' END AS label,
       t.annotators, t.votes,
       greatest(t.vx, t.vy, t.vt)::DOUBLE / t.votes AS agreement,
       f.batch_id, f.split
FROM first_seen f JOIN tally t USING (pair_id)
"""


def batch_dirs(root: Path) -> list[Path]:
    base = Path(root) / BATCHES_DIR
    if not base.exists():
        return []
    return sorted(p for p in base.iterdir() if p.is_dir() and (p / "manifest.json").exists())


def _define_views(con: duckdb.DuckDBPyConnection, root: Path, persistent: bool) -> None:
    base = (Path(root) / BATCHES_DIR).resolve()
    has_batches = bool(batch_dirs(root))
    for view, (filename, schema) in _TABLES.items():
        if has_batches:
            glob = str(base / "*" / filename).replace("'", "''")
            con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM read_parquet('{glob}', union_by_name=true)")
        elif persistent:
            empty = schema.empty_table()  # noqa: F841 — referenced by name in the SQL below
            con.execute(f"CREATE OR REPLACE TABLE {view} AS SELECT * FROM empty")
        else:
            con.register(view, schema.empty_table())
    con.execute(_PAIRS_VIEW)


def connect_catalog(root: Path | str) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with views `pairs`, `pair_index`, `votes`, `quarantine`."""
    con = duckdb.connect()
    _define_views(con, Path(root), persistent=False)
    return con


def write_catalog_file(root: Path | str) -> Path:
    """(Re)writes `<root>/curated/catalog.duckdb` atomically with the same views."""
    root = Path(root)
    target = root / CATALOG_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".duckdb")
    os.close(fd)
    os.unlink(tmp)  # duckdb wants to create the file itself
    try:
        con = duckdb.connect(tmp)
        try:
            _define_views(con, root, persistent=True)
        finally:
            con.close()
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
        Path(tmp + ".wal").unlink(missing_ok=True)
    return target


def curated_pairs(root: Path | str, split: str | None = None, include_ties: bool = True) -> pa.Table:
    """The aggregated curated pairs (schemas.CURATED_PAIR), optionally one split, ordered by pair_id."""
    con = connect_catalog(root)
    try:
        where = []
        if split:
            where.append("split = $split")
        if not include_ties:
            where.append("label = 'chosen'")
        sql = "SELECT * FROM pairs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY pair_id"
        return con.sql(sql, params={"split": split} if split else None).to_arrow_table()
    finally:
        con.close()
