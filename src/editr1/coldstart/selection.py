"""Choosing the teacher trace to keep (DESIGN §5), as pure functions.

For one (context, edited image): K candidate traces, each parsed into 0/1 answers, and the
verifier's gold labels. The selector keeps the trace with the best per-principle agreement;
ties go to the higher average score, then to the lower index. Unparseable traces never win.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from editr1.rrm.parser import Judgement


@dataclass(frozen=True)
class Selection:
    index: int | None  # None: no candidate parsed
    agreement: float  # share of principles whose answer equals gold (0 when none parsed)


def agreement(answers: Sequence[int], gold: Sequence[int]) -> float:
    """Share of positions where the answers equal gold; a length mismatch counts as missing answers."""
    if not gold:
        return 0.0
    hits = sum(1 for a, g in zip(answers, gold) if int(a) == int(g))
    return hits / len(gold)


def select_trace(judgements: Sequence[Judgement], gold: Sequence[int]) -> Selection:
    """Best agreement with gold, then higher average score, then lower index."""
    best_key, best_index = None, None
    for index, judgement in enumerate(judgements):
        if not judgement.parse_ok:
            continue
        key = (agreement(judgement.principle_scores, gold), judgement.average or 0.0, -index)
        if best_key is None or key > best_key:
            best_key, best_index = key, index
    return Selection(best_index, best_key[0] if best_key else 0.0)


def contradicts(score_chosen: float | None, score_rejected: float | None) -> bool:
    """True when the teacher's scores order a human-preferred pair the other way (strictly)."""
    return score_chosen is not None and score_rejected is not None and score_chosen < score_rejected
