"""The `curate` stage on hand-made batches: every bad-input class, dedup, conflicts, idempotency,
atomicity and split stability through the real lake."""

from __future__ import annotations

import json
import struct
import zlib

import pytest

from editr1.config import CurateConfig
from editr1.curation import add_batch, list_batches, show_batch
from editr1.curation.ingest import AddSummary
from editr1.lake import curated_pairs
from editr1.lake.catalog import connect_catalog
from tests.conftest import png_bytes

CFG = CurateConfig()


def quarantine(lake) -> dict[int, str]:
    con = connect_catalog(lake)
    try:
        return dict(con.execute("SELECT row_index, reason FROM quarantine ORDER BY row_index").fetchall())
    finally:
        con.close()


def huge_png_header(side: int = 100_000) -> bytes:
    """A valid PNG signature + IHDR claiming side×side pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def noisy_jpeg() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise((128, 128), 80).convert("RGB").save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_every_bad_input_class_is_quarantined_and_good_rows_land(batch_builder, lake):
    b = batch_builder("bad")
    good = [b.row(annotator=f"ann_{i}") for i in range(3)]
    jpeg = noisy_jpeg()
    cases = {
        "missing_file": dict(edit_a="images/nope.png"),
        "corrupt_image": dict(edit_a=b.image(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)),
        "truncated_image": dict(edit_b=b.image(jpeg[: len(jpeg) // 2], name="images/trunc.jpg")),
        "empty_image": dict(source_image=b.image(b"")),
        "image_too_large": dict(edit_a=b.image(huge_png_header())),
        "bad_preference": dict(preference="maybe"),
        "path_traversal": dict(edit_b="../outside.png"),
        "empty_instruction": dict(instruction="   \t "),
        "wrong_type": dict(preference=1),
        "missing_field": dict(annotator=None),
    }
    (b.root.parent / "outside.png").write_bytes(png_bytes((1, 2, 3)))
    expected = {}
    for reason, override in cases.items():
        b.row(**override)
        expected[len(b.rows) - 1] = reason
    b.row(edit_b="/etc/hostname")  # absolute path outside the batch
    expected[len(b.rows) - 1] = "path_traversal"
    b.raw_line(b'{"source_image": "x", "instruction": "\xff\xfe bad", "edit_a": "y"}')
    expected[len(b.rows) - 1] = "not_utf8"
    b.raw_line("{not json")
    expected[len(b.rows) - 1] = "bad_json"
    b.rows.append(dict(good[0]))  # exact duplicate row
    expected[len(b.rows) - 1] = "duplicate_row"
    swapped = dict(good[1], edit_a=good[1]["edit_b"], edit_b=good[1]["edit_a"], preference="b")
    b.rows.append(swapped)  # A/B-swapped duplicate (same judgement)
    expected[len(b.rows) - 1] = "duplicate_row"
    b.write()

    summary = add_batch(b.root, lake, CFG)
    assert summary.added == 3 and summary.votes == 3
    assert quarantine(lake) == expected
    assert summary.quarantined == len(expected)
    assert summary.duplicates == 2
    assert summary.quarantined_by_reason["path_traversal"] == 2
    assert len(curated_pairs(lake)) == 3


def test_huge_file_and_bad_mode_and_long_instruction(batch_builder, lake):
    cfg = CurateConfig(max_image_bytes=5000, allowed_modes=("RGB",), max_instruction_chars=20)
    b = batch_builder()
    b.row(edit_a=b.image(png_bytes((5, 5, 5), size=512) + b"\x00" * 6000))
    b.row(edit_a=b.image(png_bytes((9, 9, 9), mode="L")))
    b.row(instruction="a very long instruction that goes on")
    b.write()
    summary = add_batch(b.root, lake, cfg)
    assert summary.quarantined_by_reason == {"bad_image_mode": 1, "image_too_large_bytes": 1,
                                             "instruction_too_long": 1}
    assert summary.added == 0


def test_wrong_column_types_in_parquet_batch(batch_builder, lake):
    import pyarrow as pa
    import pyarrow.parquet as pq

    b = batch_builder()
    rows = [b.row(annotator=f"a{i}") for i in range(2)]
    table = pa.table({k: [r[k] for r in rows] for k in rows[0]})
    table = table.set_column(table.schema.get_field_index("preference"), "preference", pa.array([1, 2]))
    pq.write_table(table, b.root / "pairs.parquet")
    summary = add_batch(b.root, lake, CFG)
    assert summary.quarantined_by_reason == {"wrong_type": 2}


def test_identical_edits_are_rejected(batch_builder, lake):
    b = batch_builder()
    img = b.image()
    b.row(edit_a=img, edit_b=img)
    b.write()
    assert add_batch(b.root, lake, CFG).quarantined_by_reason == {"identical_edits": 1}


def test_same_batch_twice_adds_nothing(batch_builder, lake):
    b = batch_builder()
    for i in range(4):
        b.row(annotator=f"ann_{i}")
    b.write()
    first = add_batch(b.root, lake, CFG)
    second = add_batch(b.root, lake, CFG)
    assert first.added == 4 and second.added == 0 and second.already_ingested
    assert len(list_batches(lake)) == 1


def test_votes_aggregate_across_annotators_and_batches(batch_builder, lake):
    b1 = batch_builder("first")
    r = b1.row(annotator="ann_1", preference="a")
    b1.row(**{**r, "annotator": "ann_2", "preference": "a"})
    b1.write()
    s1 = add_batch(b1.root, lake, CFG)
    assert (s1.added, s1.votes, s1.conflicts) == (1, 2, 0)

    # a later batch shows the same pair swapped to a third annotator who disagrees
    b2 = batch_builder("second")
    for name in ("source_image", "edit_a", "edit_b"):
        (b2.root / r[name]).write_bytes((b1.root / r[name]).read_bytes())
    b2.rows.append({**r, "edit_a": r["edit_b"], "edit_b": r["edit_a"], "annotator": "ann_3", "preference": "a",
                    "batch_id": "second"})
    b2.rows.append({**r, "annotator": "ann_1", "preference": "a", "batch_id": "second"})  # seen before
    b2.write()
    s2 = add_batch(b2.root, lake, CFG)
    assert (s2.added, s2.votes, s2.conflicts, s2.duplicates) == (0, 1, 1, 1)

    pairs = curated_pairs(lake).to_pylist()
    assert len(pairs) == 1
    pair = pairs[0]
    assert pair["votes"] == 3 and pair["annotators"] == 3
    assert pair["agreement"] == pytest.approx(2 / 3)
    assert pair["label"] == "chosen"
    a_sha = __import__("hashlib").sha256((b1.root / r["edit_a"]).read_bytes()).hexdigest()
    assert pair["chosen_sha"] == a_sha
    assert pair["batch_id"] == "first"


def test_tie_label_when_votes_split(batch_builder, lake):
    b = batch_builder()
    r = b.row(annotator="ann_1", preference="a")
    b.row(**{**r, "annotator": "ann_2", "preference": "b"})
    b.row(**{**r, "annotator": "ann_3", "preference": "tie"})
    b.write()
    add_batch(b.root, lake, CFG)
    (pair,) = curated_pairs(lake).to_pylist()
    assert pair["label"] == "tie" and pair["agreement"] == pytest.approx(1 / 3)


def test_crash_before_publish_leaves_lake_unchanged(batch_builder, lake, monkeypatch):
    b1 = batch_builder("kept")
    b1.row()
    b1.write()
    add_batch(b1.root, lake, CFG)
    before = sorted(p.relative_to(lake) for p in (lake / "curated").rglob("*"))

    b2 = batch_builder("crashes")
    b2.row(annotator="zz")
    b2.write()
    import editr1.curation.ingest as ingest

    def boom(*_args, **_kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(ingest, "publish", boom)
    with pytest.raises(RuntimeError):
        add_batch(b2.root, lake, CFG)
    after = sorted(p.relative_to(lake) for p in (lake / "curated").rglob("*"))
    assert after == before
    assert list((lake / ".staging").iterdir()) == []
    monkeypatch.undo()
    assert add_batch(b2.root, lake, CFG).added == 1  # and the retry lands


def test_split_of_existing_context_survives_ratio_change(batch_builder, lake):
    b1 = batch_builder("one")
    r = b1.row()
    b1.write()
    add_batch(b1.root, lake, CFG)
    (first,) = curated_pairs(lake).to_pylist()
    # same context (source + instruction), a new pair, and ratios that would send everything elsewhere
    other = "val" if first["split"] == "train" else "train"
    b2 = batch_builder("two")
    shared = b2.image((b1.root / r["source_image"]).read_bytes(), name="images/shared_source.png")
    b2.row(source_image=shared, annotator="ann_9")
    b2.write()
    add_batch(b2.root, lake, CurateConfig(split_ratios={other: 1.0}))
    splits = {p["context_id"]: p["split"] for p in curated_pairs(lake).to_pylist()}
    assert set(splits.values()) == {first["split"]}


def test_show_and_list(batch_builder, lake):
    b = batch_builder("shown")
    b.row()
    b.row(preference="maybe")
    b.write()
    add_batch(b.root, lake, CFG)
    info = show_batch(lake, "shown")
    assert info["added"] == 1 and info["current"]["quarantine"] == {"bad_preference": 1}
    with pytest.raises(KeyError):
        show_batch(lake, "absent")


def test_summary_is_json_safe(batch_builder, lake):
    b = batch_builder()
    b.row()
    b.write()
    s: AddSummary = add_batch(b.root, lake, CFG)
    data = json.loads(json.dumps(s.to_dict()))
    assert {"added", "duplicates", "conflicts", "quarantined", "quarantined_by_reason"} <= set(data)
