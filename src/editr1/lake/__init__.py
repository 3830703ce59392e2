"""Storage I/O: content-addressed object stores (local or S3), Parquet, the DuckDB catalogue.

Everything that touches boto3, pyarrow files or duckdb lives here.
"""

from editr1.lake.catalog import connect_catalog, curated_pairs, write_catalog_file
from editr1.lake.objects import LocalObjectStore, ObjectStore, S3ObjectStore, open_object_store, sha256_hex
from editr1.lake.remote import is_s3_uri, parse_s3_uri, read_uri_bytes, s3_client
from editr1.lake.tables import read_parquet, write_parquet_atomic
from editr1.lake.transaction import lake_lock, staged_directory

__all__ = [
    "LocalObjectStore", "ObjectStore", "S3ObjectStore", "connect_catalog", "curated_pairs", "is_s3_uri",
    "lake_lock", "open_object_store", "parse_s3_uri", "read_parquet", "read_uri_bytes", "s3_client",
    "sha256_hex", "staged_directory", "write_catalog_file", "write_parquet_atomic",
]
