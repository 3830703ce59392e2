"""Identifiers of curated data: instruction normalisation, context_id, pair_id."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_SPACES = re.compile(r"\s+")


def normalise_instruction(text: str) -> str:
    """NFKC, control characters removed, whitespace collapsed, trimmed. Case is kept for display."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    return _SPACES.sub(" ", text).strip()


def context_id(source_sha: str, instruction: str) -> str:
    """Hash of the source image bytes and the case-folded normalised instruction."""
    key = f"{source_sha}\x00{normalise_instruction(instruction).casefold()}"
    return hashlib.sha256(key.encode()).hexdigest()


def pair_id(context: str, sha_a: str, sha_b: str) -> str:
    """Order-independent: (a, b) and (b, a) of the same context give the same id."""
    lo, hi = sorted((sha_a, sha_b))
    return hashlib.sha256(f"{context}\x00{lo}\x00{hi}".encode()).hexdigest()
