"""On-disk cache of teacher responses, keyed by a hash of the request (DESIGN §5).

A teacher call is worth money and minutes; re-running a stage must not pay twice. The key is the
sha256 of a canonical JSON of everything that changes the answer (model, messages with every
image replaced by the hash of its pixels, temperature, sample index, ...). Values are JSON
objects, written atomically (temp file + rename) so that concurrent writers and a killed run
never leave a torn entry::

    from editr1.teachers.cache import ResponseCache, request_key
    cache = ResponseCache(Path("storage/teacher_cache/openai"))
    key = request_key({"model": "gpt-4o", "messages": hashed_messages, "temperature": 0.7, "k": 0})
    hit = cache.get(key)            # dict or None
    cache.put(key, {"response": response_json})

Never put credentials in a key payload or a value: entries are plain files.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image


def image_sha256(image: Image.Image) -> str:
    """sha256 of an image's mode, size and pixels (independent of any file encoding)."""
    digest = hashlib.sha256()
    digest.update(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode("ascii"))
    digest.update(image.tobytes())
    return digest.hexdigest()


def request_key(payload: Any) -> str:
    """sha256 hex digest of ``payload`` as canonical JSON (sorted keys, no whitespace).

    Raises TypeError when the payload holds something JSON cannot encode (e.g. an image:
    replace it with `image_sha256` first).
    """
    text = json.dumps(payload, sort_keys=True, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


class ResponseCache:
    """JSON values stored under ``root/<key[:2]>/<key>.json``; safe to share between threads."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"cache key must be a sha256 hex digest, got {key!r}")
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored value, or None when absent or unreadable (a corrupt entry is a miss)."""
        try:
            with open(self.path(key), encoding="utf-8") as fh:
                value = json.load(fh)
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Write ``value`` atomically (last writer wins; both wrote the same request's answer)."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{key[:8]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("??/*.json")) if self.root.exists() else 0
