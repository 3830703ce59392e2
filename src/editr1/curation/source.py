"""Reading a preference batch as the data team drops it: a folder or an s3:// prefix holding
`pairs.jsonl` or `pairs.parquet` plus images referenced by relative paths (or s3:// URIs).

Rows are read without judging them; a row that cannot even be decoded is returned with its error so
it can be quarantined with the reason.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from editr1.lake.remote import is_s3_uri, list_s3_keys, parse_s3_uri, read_uri_bytes

PAIR_FILES = ("pairs.jsonl", "pairs.parquet")


class BatchError(ValueError):
    """The batch as a whole cannot be read (no pairs file, unreadable file)."""


@dataclass
class RawRow:
    index: int
    data: dict[str, Any] | None  # None when the row could not be decoded
    error: str | None = None  # reason code when data is None
    detail: str | None = None
    raw: str | None = None  # the undecodable text, for the quarantine table


class PathRejected(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


class BatchSource:
    """A batch location; resolves image references safely (nothing outside the batch)."""

    def __init__(self, location: str | Path, endpoint_url: str | None = None):
        self.location = str(location).rstrip("/")
        self.endpoint_url = endpoint_url or None
        self.is_s3 = is_s3_uri(self.location)
        if not self.is_s3:
            self.root = Path(self.location).resolve()
            if not self.root.is_dir():
                raise BatchError(f"batch folder not found: {self.location}")
        self.pairs_name = self._find_pairs_file()
        self.pairs_bytes = read_uri_bytes(self._join(self.pairs_name), self.endpoint_url)
        self.fingerprint = hashlib.sha256(self.pairs_bytes).hexdigest()

    @property
    def name(self) -> str:
        return posixpath.basename(self.location) if self.is_s3 else self.root.name

    def _find_pairs_file(self) -> str:
        if self.is_s3:
            bucket, prefix = parse_s3_uri(self.location)
            names = {k[len(prefix) + 1:] if prefix else k for k in list_s3_keys(self.location, self.endpoint_url)}
        else:
            names = {p.name for p in self.root.iterdir()}
        for candidate in PAIR_FILES:
            if candidate in names:
                return candidate
        raise BatchError(f"no pairs.jsonl or pairs.parquet in {self.location}")

    def _join(self, rel: str) -> str:
        return f"{self.location}/{rel}" if self.is_s3 else str(self.root / rel)

    def resolve(self, ref: str) -> str:
        """Where an image field points; PathRejected for traversal or absolute paths outside."""
        if is_s3_uri(ref):
            parse_s3_uri(ref)
            return ref
        if not ref or "\x00" in ref:
            raise PathRejected("bad_path", f"invalid image path {ref!r}")
        if self.is_s3:
            if ref.startswith("/"):
                raise PathRejected("path_traversal", f"absolute path {ref!r} in an s3 batch")
            norm = posixpath.normpath(ref)
            if norm.startswith(".."):
                raise PathRejected("path_traversal", f"path {ref!r} leaves the batch")
            return self._join(norm)
        candidate = Path(ref)
        full = (candidate if candidate.is_absolute() else self.root / candidate).resolve()
        if not full.is_relative_to(self.root):
            raise PathRejected("path_traversal", f"path {ref!r} resolves outside the batch")
        return str(full)

    def read(self, resolved: str) -> bytes:
        return read_uri_bytes(resolved, self.endpoint_url)

    def rows(self) -> list[RawRow]:
        if self.pairs_name.endswith(".jsonl"):
            return list(_jsonl_rows(self.pairs_bytes))
        return list(_parquet_rows(self.pairs_bytes))


def _jsonl_rows(data: bytes):
    index = 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            yield RawRow(index, None, "not_utf8", f"row is not valid UTF-8: {err.reason}",
                         line.decode("utf-8", errors="backslashreplace"))
            index += 1
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            yield RawRow(index, None, "bad_json", f"not JSON: {err.msg}", text)
        else:
            if isinstance(obj, dict):
                yield RawRow(index, obj)
            else:
                yield RawRow(index, None, "bad_json", "row is not a JSON object", text)
        index += 1


def _parquet_rows(data: bytes):
    try:
        table = pq.read_table(pa.BufferReader(data))
    except Exception as err:  # noqa: BLE001 — any unreadable file is one batch-level error
        raise BatchError(f"pairs.parquet is unreadable: {err}") from err
    for index, row in enumerate(table.to_pylist()):
        yield RawRow(index, row)
