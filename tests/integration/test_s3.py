"""Object store, Parquet and batch ingest against a real S3-compatible server (moto_server)."""

from __future__ import annotations

import uuid

import pyarrow as pa

from editr1.config import CurateConfig
from editr1.curation import add_batch
from editr1.lake import S3ObjectStore, curated_pairs, read_parquet, s3_client, sha256_hex, write_parquet_atomic
from tests.conftest import png_bytes


def make_bucket(endpoint: str) -> str:
    name = f"lake-{uuid.uuid4().hex[:8]}"
    s3_client(endpoint).create_bucket(Bucket=name)
    return name


def test_object_store_round_trip(s3_endpoint):
    bucket = make_bucket(s3_endpoint)
    store = S3ObjectStore(f"s3://{bucket}/objects", s3_endpoint)
    data = png_bytes((1, 2, 3))
    sha = store.put(data)
    assert sha == sha256_hex(data)
    assert store.exists(sha) and store.get(sha) == data
    assert store.uri(sha) == f"s3://{bucket}/objects/{sha[:2]}/{sha[2:]}"
    assert store.put(data) == sha  # idempotent
    assert not S3ObjectStore(f"s3://{bucket}/objects", s3_endpoint).exists("0" * 64)


def test_parquet_round_trip(s3_endpoint):
    bucket = make_bucket(s3_endpoint)
    table = pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    uri = f"s3://{bucket}/tables/t.parquet"
    write_parquet_atomic(table, uri, s3_endpoint)
    assert read_parquet(uri, s3_endpoint).equals(table)


def test_batch_from_s3_into_s3_object_store(s3_endpoint, batch_builder, lake):
    b = batch_builder("s3batch")
    for i in range(3):
        b.row(annotator=f"ann_{i}")
    b.row(edit_a="../../escape.png")
    b.row(edit_a="images/missing.png")
    b.write()
    bucket = make_bucket(s3_endpoint)
    client = s3_client(s3_endpoint)
    for path in b.root.rglob("*"):
        if path.is_file():
            client.put_object(Bucket=bucket, Key=f"incoming/s3batch/{path.relative_to(b.root)}", Body=path.read_bytes())
    cfg = CurateConfig(object_store=f"s3://{bucket}/objects", s3_endpoint_url=s3_endpoint)
    summary = add_batch(f"s3://{bucket}/incoming/s3batch", lake, cfg)
    assert summary.added == 3
    assert summary.quarantined_by_reason == {"missing_file": 1, "path_traversal": 1}
    store = S3ObjectStore(f"s3://{bucket}/objects", s3_endpoint)
    for pair in curated_pairs(lake).to_pylist():
        assert store.exists(pair["chosen_sha"]) and store.exists(pair["source_sha"])
    assert add_batch(f"s3://{bucket}/incoming/s3batch", lake, cfg).added == 0
