"""The one interface every teacher implements (oracle, openai-compatible HTTP, local HF VLM).

A teacher writes principle checklists for contexts, K candidate RRM traces per quadruple (full
output texts in the RRM format, see `editr1.rrm.parser`), and gold 0/1 labels per principle
(the verifier). `usage` accumulates calls, cache hits, retries, errors, tokens and cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

from editr1.rrm.items import Context, Quadruple
from editr1.rrm.principles import Principle


@dataclass
class TeacherUsage:
    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    errors: int = 0
    invalid_outputs: int = 0  # answers that failed schema validation and were asked again
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class Teacher(Protocol):
    name: str
    usage: TeacherUsage

    def principles(self, contexts: Sequence[Context]) -> list[list[Principle]]:
        """A checklist (~10 principles: 3–4 follow, 3–4 keep, 2–3 quality) per context."""
        ...

    def traces(self, quads: Sequence[Quadruple], k: int, temperature: float) -> list[list[str]]:
        """K candidate RRM output texts per quadruple (varying prompt phrasing and temperature)."""
        ...

    def verify(self, quad: Quadruple) -> list[int]:
        """Gold 0/1 per principle of the quadruple, in order."""
        ...
