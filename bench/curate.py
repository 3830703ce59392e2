"""Curate throughput: ingest N pairs of 256×256 PNGs and compare with the floor measured in the same
run — a plain loop that reads, sha256-hashes and fully decodes the same image files once each.

    python bench/curate.py [--pairs 2000] [--size 256]

Prints pairs/s and the ratio ingest / floor (goal ≤ 1.5).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from PIL import Image

from editr1.config import CurateConfig
from editr1.curation import add_batch
from editr1.world import WorldConfig, write_batch


def floor_seconds(batch: Path) -> tuple[float, int]:
    refs = set()
    for line in (batch / "pairs.jsonl").read_text().splitlines():
        row = json.loads(line)
        refs.update((row["source_image"], row["edit_a"], row["edit_b"]))
    started = time.perf_counter()
    for ref in sorted(refs):
        data = (batch / ref).read_bytes()
        hashlib.sha256(data).hexdigest()
        Image.open(io.BytesIO(data)).load()
    return time.perf_counter() - started, len(refs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2, help="Best of N for both measurements.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        batch = Path(tmp) / "batch"
        write_batch(batch, args.pairs, seed=0, cfg=replace(WorldConfig(), image_size=args.size))
        floor, images = min(floor_seconds(batch) for _ in range(args.repeats))
        ingest = float("inf")
        for i in range(args.repeats):
            summary = add_batch(batch, Path(tmp) / f"lake{i}", CurateConfig())
            assert summary.added == args.pairs, summary
            ingest = min(ingest, summary.seconds)
    print(f"pairs={args.pairs} images={images} size={args.size}")
    print(f"floor (read+sha256+decode): {floor:.2f} s  ({images / floor:.0f} images/s)")
    print(f"ingest (curate add_batch):  {ingest:.2f} s  ({args.pairs / ingest:.0f} pairs/s)")
    print(f"ratio ingest/floor: {ingest / floor:.2f}  (goal <= 1.5)")


if __name__ == "__main__":
    main()
