"""S3 addressing and byte reads that work the same for local paths and s3:// URIs."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import boto3
from botocore.config import Config


def is_s3_uri(value: str | Path) -> bool:
    return str(value).startswith("s3://")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b` → ("bucket", "a/b"); a clear error for anything else."""
    if not is_s3_uri(uri):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"s3 URI without a bucket: {uri!r}")
    return bucket, key.strip("/")


def endpoint_from_env(explicit: str | None = None) -> str | None:
    """The S3 endpoint: explicit, else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else AWS default."""
    return explicit or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


@functools.lru_cache(maxsize=8)
def _client(endpoint_url: str | None):
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=16),
    )


def s3_client(endpoint_url: str | None = None):
    """A cached boto3 S3 client (retries with backoff on throttling and 5xx)."""
    return _client(endpoint_from_env(endpoint_url))


def read_uri_bytes(uri: str | Path, endpoint_url: str | None = None) -> bytes:
    """Whole-object read from a local path or an s3:// URI."""
    if is_s3_uri(uri):
        bucket, key = parse_s3_uri(str(uri))
        return s3_client(endpoint_url).get_object(Bucket=bucket, Key=key)["Body"].read()
    return Path(uri).read_bytes()


def list_s3_keys(uri: str, endpoint_url: str | None = None) -> list[str]:
    """All object keys under an s3:// prefix (paginated)."""
    bucket, prefix = parse_s3_uri(uri)
    prefix = f"{prefix}/" if prefix else ""
    paginator = s3_client(endpoint_url).get_paginator("list_objects_v2")
    keys: list[str] = []
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys
