"""Leakage-safe, stable split assignment by context.

A context's split is a pure function of its id (a salted hash mapped onto the cumulative ratios),
so it never depends on which other batches exist; and a context already in the lake keeps the split
recorded there, even if the ratios or salt change later. Both together mean a new batch never moves
an existing pair, and no source image + instruction is in two splits.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping


def check_ratios(ratios: Mapping[str, float]) -> None:
    if not ratios:
        raise ValueError("split_ratios is empty")
    if any(r < 0 for r in ratios.values()):
        raise ValueError(f"split_ratios must be non-negative: {dict(ratios)}")
    if not math.isclose(sum(ratios.values()), 1.0, abs_tol=1e-6):
        raise ValueError(f"split_ratios must sum to 1, got {sum(ratios.values()):.6f}")


def hash_split(context_id: str, ratios: Mapping[str, float], salt: str) -> str:
    """The split a new context goes to (ratios in their given order, e.g. train, val, test)."""
    digest = hashlib.sha256(f"{salt}\x00{context_id}".encode()).hexdigest()
    u = int(digest[:15], 16) / float(16**15)
    cumulative = 0.0
    names = list(ratios)
    for name in names:
        cumulative += ratios[name]
        if u < cumulative:
            return name
    return names[-1]


def assign_splits(context_ids: list[str], existing: Mapping[str, str], ratios: Mapping[str, float],
                  salt: str) -> dict[str, str]:
    """Split per context: the recorded one when the context exists, else its hash split."""
    check_ratios(ratios)
    return {c: existing.get(c) or hash_split(c, ratios, salt) for c in context_ids}
