"""Parquet reads and atomic writes, local or on S3 (pyarrow's S3 filesystem; DuckDB's httpfs
cannot be installed offline)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from editr1.lake.remote import endpoint_from_env, is_s3_uri, parse_s3_uri


def _s3_filesystem(endpoint_url: str | None) -> pafs.S3FileSystem:
    endpoint = endpoint_from_env(endpoint_url)
    kwargs: dict = {"region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    return pafs.S3FileSystem(**kwargs)


def write_parquet_atomic(table: pa.Table, target: str | Path, endpoint_url: str | None = None) -> str:
    """Writes a Parquet file so readers see either nothing or the whole file."""
    if is_s3_uri(target):
        bucket, key = parse_s3_uri(str(target))
        pq.write_table(table, f"{bucket}/{key}", filesystem=_s3_filesystem(endpoint_url))  # one PUT: atomic
        return str(target)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".parquet")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return str(target)


def read_parquet(source: str | Path, endpoint_url: str | None = None) -> pa.Table:
    """Reads a Parquet file from a local path or an s3:// URI."""
    if is_s3_uri(source):
        bucket, key = parse_s3_uri(str(source))
        return pq.read_table(f"{bucket}/{key}", filesystem=_s3_filesystem(endpoint_url))
    return pq.read_table(source)
