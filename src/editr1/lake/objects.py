"""Content-addressed object stores: image bytes stored once, keyed by the sha256 of the bytes.

Layout (the same locally and on S3): `<root>/ab/cdef…` where `abcdef…` is the hex digest.
Writes are atomic (local: temp file + rename; S3: a single PUT) and idempotent.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Protocol

from botocore.exceptions import ClientError

from editr1.lake.remote import is_s3_uri, parse_s3_uri, s3_client


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def object_key(sha: str) -> str:
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ValueError(f"not a sha256 hex digest: {sha!r}")
    return f"{sha[:2]}/{sha[2:]}"


class ObjectStore(Protocol):
    def put(self, data: bytes, sha: str | None = None) -> str: ...
    def get(self, sha: str) -> bytes: ...
    def exists(self, sha: str) -> bool: ...
    def uri(self, sha: str) -> str: ...


class LocalObjectStore:
    """Objects under a local directory."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def path(self, sha: str) -> Path:
        return self.root / object_key(sha)

    def uri(self, sha: str) -> str:
        return str(self.path(sha))

    def exists(self, sha: str) -> bool:
        return self.path(sha).exists()

    def put(self, data: bytes, sha: str | None = None) -> str:
        sha = sha or sha256_hex(data)
        target = self.path(sha)
        if target.exists():
            return sha
        target.parent.mkdir(parents=True, exist_ok=True)
        # A unique temp name without mkstemp's random retries; the rename makes the write atomic.
        tmp = target.with_name(f".tmp-{target.name[:16]}-{os.getpid()}-{threading.get_ident()}")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return sha

    def get(self, sha: str) -> bytes:
        return self.path(sha).read_bytes()


class S3ObjectStore:
    """Objects under `s3://bucket/prefix/` through boto3 (endpoint configurable)."""

    def __init__(self, uri: str, endpoint_url: str | None = None):
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.endpoint_url = endpoint_url
        self._known: set[str] = set()

    @property
    def client(self):
        return s3_client(self.endpoint_url)

    def key(self, sha: str) -> str:
        return f"{self.prefix}/{object_key(sha)}" if self.prefix else object_key(sha)

    def uri(self, sha: str) -> str:
        return f"s3://{self.bucket}/{self.key(sha)}"

    def exists(self, sha: str) -> bool:
        if sha in self._known:
            return True
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(sha))
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        self._known.add(sha)
        return True

    def put(self, data: bytes, sha: str | None = None) -> str:
        sha = sha or sha256_hex(data)
        if not self.exists(sha):
            self.client.put_object(Bucket=self.bucket, Key=self.key(sha), Body=data)
            self._known.add(sha)
        return sha

    def get(self, sha: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self.key(sha))["Body"].read()


def open_object_store(spec: str, storage: Path, endpoint_url: str | None = None) -> ObjectStore:
    """`""` → `<storage>/objects`; a path → that directory; `s3://bucket/prefix` → S3."""
    if not spec:
        return LocalObjectStore(Path(storage) / "objects")
    if is_s3_uri(spec):
        return S3ObjectStore(spec, endpoint_url or None)
    return LocalObjectStore(Path(spec))
