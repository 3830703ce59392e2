"""Shared fixtures: tiny hand-made preference batches (PIL images written in code), a lake root,
and environment settings that keep tests offline."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

ROOT = Path(__file__).resolve().parents[1]


def png_bytes(color: tuple[int, int, int], size: int = 32, fmt: str = "PNG", mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (size, size), color if mode == "RGB" else color[0]).save(buf, format=fmt)
    return buf.getvalue()


class BatchBuilder:
    """Writes a batch folder in the data team's format, row by row."""

    def __init__(self, root: Path, batch_id: str = "b1"):
        self.root = root
        self.batch_id = batch_id
        (root / "images").mkdir(parents=True, exist_ok=True)
        self.rows: list[dict | bytes | str] = []
        self._n = 0
        self._salt = sum(root.name.encode()) * 7  # builders draw different images

    def image(self, data: bytes | None = None, name: str | None = None) -> str:
        self._n += 1
        name = name or f"images/img_{self._n:04d}.png"
        k = self._n + self._salt
        data = data if data is not None else png_bytes(((k * 37) % 256, (k * 91) % 256, (k * 53) % 256))
        (self.root / name).write_bytes(data)
        return name

    def row(self, **overrides) -> dict:
        row = {"source_image": self.image(), "instruction": "Make the circle blue", "edit_a": self.image(),
               "edit_b": self.image(), "preference": "a", "annotator": "ann_1", "category": "color_alteration",
               "batch_id": self.batch_id}
        row.update(overrides)
        self.rows.append(row)
        return row

    def raw_line(self, line: bytes | str) -> None:
        self.rows.append(line)

    def write(self) -> Path:
        with open(self.root / "pairs.jsonl", "wb") as fh:
            for row in self.rows:
                if isinstance(row, dict):
                    fh.write(json.dumps(row).encode() + b"\n")
                else:
                    fh.write((row.encode() if isinstance(row, str) else row) + b"\n")
        return self.root


@pytest.fixture
def batch_builder(tmp_path):
    counter = {"n": 0}

    def make(batch_id: str = "b1") -> BatchBuilder:
        counter["n"] += 1
        return BatchBuilder(tmp_path / f"batch{counter['n']}", batch_id)

    return make


@pytest.fixture
def lake(tmp_path) -> Path:
    return tmp_path / "lake"
