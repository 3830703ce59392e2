"""Validation of preference rows and their images. Each check returns a reason code on failure,
so every rejected row lands in quarantine with why (never dropped silently).

Reason codes: not_utf8, bad_json, missing_field, wrong_type, bad_preference, empty_instruction,
instruction_too_long, bad_path, path_traversal, missing_file, empty_image, image_too_large_bytes,
corrupt_image, truncated_image, image_too_large, image_too_small, bad_image_format,
bad_image_mode, identical_edits, duplicate_row, annotator_conflict.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image

from editr1.config import CurateConfig
from editr1.curation.ids import normalise_instruction

REQUIRED_FIELDS = ("source_image", "instruction", "edit_a", "edit_b", "preference", "annotator")
IMAGE_FIELDS = ("source_image", "edit_a", "edit_b")
PREFERENCES = ("a", "b", "tie")


class Rejected(Exception):
    """A row is rejected: `reason` is the quarantine code, the message the detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class RowFields:
    source_image: str
    edit_a: str
    edit_b: str
    instruction: str
    preference: str
    annotator: str
    category: str | None


def check_fields(row: dict[str, Any], cfg: CurateConfig) -> RowFields:
    """Schema and value checks of one row (no I/O). Raises Rejected."""
    missing = [f for f in REQUIRED_FIELDS if row.get(f) is None]
    if missing:
        raise Rejected("missing_field", f"missing field(s): {', '.join(missing)}")
    for name in (*REQUIRED_FIELDS, "category"):
        value = row.get(name)
        if value is not None and not isinstance(value, str):
            raise Rejected("wrong_type", f"field '{name}' must be a string, got {type(value).__name__}")
    preference = row["preference"].strip().lower()
    if preference not in PREFERENCES:
        raise Rejected("bad_preference", f"preference must be one of a, b, tie; got {row['preference']!r}")
    instruction = normalise_instruction(row["instruction"])
    if not instruction:
        raise Rejected("empty_instruction", "instruction is empty after normalisation")
    if "\ufffd" in instruction:
        raise Rejected("not_utf8", "instruction holds replacement characters (undecodable bytes upstream)")
    if len(instruction) > cfg.max_instruction_chars:
        raise Rejected("instruction_too_long", f"instruction has {len(instruction)} characters "
                                               f"(limit {cfg.max_instruction_chars})")
    annotator = row["annotator"].strip()
    if not annotator:
        raise Rejected("missing_field", "annotator is empty")
    category = (row.get("category") or "").strip() or None
    return RowFields(row["source_image"], row["edit_a"], row["edit_b"], instruction, preference,
                     annotator, category)


@dataclass(frozen=True)
class ImageInfo:
    sha: str
    width: int
    height: int
    format: str
    mode: str


def check_image(data: bytes, cfg: CurateConfig) -> tuple[int, int, str, str]:
    """Decodes the whole image and checks limits. Returns (width, height, format, mode); raises Rejected.

    The size is checked from the header before decoding, so a decompression bomb is never expanded.
    """
    if not data:
        raise Rejected("empty_image", "image file is empty (0 bytes)")
    if len(data) > cfg.max_image_bytes:
        raise Rejected("image_too_large_bytes", f"image has {len(data)} bytes (limit {cfg.max_image_bytes})")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise Rejected("image_too_large", f"image dimensions too large: {err}") from None
        except Exception as err:  # noqa: BLE001 — PIL raises many types for undecodable input
            raise Rejected("corrupt_image", f"cannot identify image: {type(err).__name__}") from None
        width, height = image.size
        fmt, mode = image.format or "?", image.mode
        if max(width, height) > cfg.max_image_side:
            raise Rejected("image_too_large", f"image is {width}x{height} (limit {cfg.max_image_side} per side)")
        if min(width, height) < cfg.min_image_side:
            raise Rejected("image_too_small", f"image is {width}x{height} (minimum {cfg.min_image_side} per side)")
        if fmt not in cfg.allowed_formats:
            raise Rejected("bad_image_format", f"image format {fmt} not in {list(cfg.allowed_formats)}")
        if mode not in cfg.allowed_modes:
            raise Rejected("bad_image_mode", f"image mode {mode} not in {list(cfg.allowed_modes)}")
        try:
            image.load()
        except OSError as err:
            reason = "truncated_image" if "truncat" in str(err).lower() else "corrupt_image"
            raise Rejected(reason, f"image does not decode: {err}") from None
        except Exception as err:  # noqa: BLE001
            raise Rejected("corrupt_image", f"image does not decode: {type(err).__name__}: {err}") from None
    return width, height, fmt, mode
