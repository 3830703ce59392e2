"""Principles: the ~10 yes/no questions an edit is judged against (DESIGN §4).

A checklist holds 3–4 *follow* questions (was the instruction carried out?), 3–4 *keep*
questions (was everything else left alone?) and 2–3 *quality* questions (is the result
clean?). Teachers write them as a JSON list; `parse_principles_json` reads that list out of a
teacher's reply and `validate_principles` checks it, raising a one-line `ValueError` that says
what is wrong. `generic_principles` builds a checklist from the instruction alone, for runs
without a teacher.

    >>> ps = generic_principles("make the circle blue")
    >>> [p.category for p in ps].count("follow")
    4
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, get_args

Category = Literal["follow", "keep", "quality"]
CATEGORIES: tuple[str, ...] = get_args(Category)

# Inclusive (min, max) number of principles per category; about 10 in all.
DEFAULT_BOUNDS: Mapping[str, tuple[int, int]] = MappingProxyType(
    {"follow": (3, 4), "keep": (3, 4), "quality": (2, 3)}
)

_FENCE = re.compile(r"```[A-Za-z]*[ \t]*\n?(.*?)```", re.DOTALL)


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite JSON constant {name}")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


@dataclass(frozen=True)
class Principle:
    """One binary question about an edit, e.g. ("Is the circle now blue?", "follow")."""

    question: str
    category: Category

    def __post_init__(self) -> None:
        if not isinstance(self.question, str):
            raise ValueError(f"question must be a string, got {type(self.question).__name__}")
        if not self.question.strip():
            raise ValueError("question is empty")
        if self.question != self.question.strip():
            raise ValueError(f"question has leading or trailing whitespace: {self.question!r}")
        if "\n" in self.question or "\r" in self.question:
            raise ValueError(f"question spans several lines: {self.question!r}")
        if self.category not in CATEGORIES:
            raise ValueError(
                f"unknown category {self.category!r} (expected one of {', '.join(CATEGORIES)})"
            )

    def to_dict(self) -> dict[str, str]:
        """The JSON form: {"question": ..., "category": ...}."""
        return {"question": self.question, "category": self.category}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Principle:
        """Build from the JSON form; surrounding whitespace of the question is dropped.

        Raises ValueError when `data` is not a mapping, lacks a key, has an unknown key, or
        holds a bad value.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"expected an object with question and category, got {type(data).__name__}")
        missing = [k for k in ("question", "category") if k not in data]
        if missing:
            raise ValueError(f"missing key(s) {', '.join(missing)}")
        unknown = sorted(str(k) for k in data if k not in ("question", "category"))
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)}")
        question = data["question"]
        if isinstance(question, str):
            question = question.strip()
        return cls(question=question, category=data["category"])


def _check_bounds(bounds: Mapping[str, tuple[int, int]]) -> None:
    if set(bounds) != set(CATEGORIES):
        raise ValueError(f"bounds must have exactly the keys {', '.join(CATEGORIES)}, got {sorted(bounds)}")
    for category, pair in bounds.items():
        lo, hi = pair
        if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi):
            raise ValueError(f"bad bounds for {category!r}: {pair!r} (need 0 <= min <= max)")


def validate_principles(
    items: Any, *, bounds: Mapping[str, tuple[int, int]] = DEFAULT_BOUNDS
) -> list[Principle]:
    """Check a checklist and return it as Principles, in the given order.

    `items` is a list of `Principle` or of {"question", "category"} dicts. `bounds` maps each
    category to the inclusive (min, max) count allowed (default 3–4 follow, 3–4 keep,
    2–3 quality). Duplicate questions are rejected. Raises ValueError with a one-line message
    naming the first problem found.
    """
    _check_bounds(bounds)
    if not isinstance(items, list):
        raise ValueError(f"principles must be a list, got {type(items).__name__}")
    principles: list[Principle] = []
    for i, item in enumerate(items):
        try:
            principles.append(item if isinstance(item, Principle) else Principle.from_dict(item))
        except ValueError as exc:
            raise ValueError(f"principle {i}: {exc}") from None
    seen: set[str] = set()
    for i, p in enumerate(principles):
        key = p.question.casefold()
        if key in seen:
            raise ValueError(f"principle {i}: duplicate question {p.question!r}")
        seen.add(key)
    for category in CATEGORIES:
        lo, hi = bounds[category]
        n = sum(p.category == category for p in principles)
        if not lo <= n <= hi:
            raise ValueError(f"expected {lo}-{hi} {category!r} principles, got {n}")
    return principles


def _json_lists(text: str) -> list[list[Any]]:
    """The lists of objects that decode at one of the first 64 '[{' of `text`, in order."""
    found: list[list[Any]] = []
    for match in itertools.islice(re.finditer(r"\[\s*\{", text), 64):
        try:
            value, _ = _DECODER.raw_decode(text, match.start())
        except (ValueError, RecursionError):
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            found.append(value)
    return found


def parse_principles_json(
    text: str, *, bounds: Mapping[str, tuple[int, int]] = DEFAULT_BOUNDS
) -> list[Principle]:
    """Read a teacher's checklist: the first JSON list of objects in `text`, then validate it.

    The list may sit inside a ```json fence or be surrounded by prose. Raises ValueError when
    no list is found or when it fails `validate_principles`.
    """
    if not isinstance(text, str):
        raise ValueError(f"teacher output must be a string, got {type(text).__name__}")
    candidates: list[list[Any]] = []
    for block in _FENCE.findall(text):
        candidates.extend(_json_lists(block))
    candidates.extend(_json_lists(text))
    if not candidates:
        raise ValueError(f"no JSON list of principles found in teacher output ({len(text)} chars)")
    return validate_principles(candidates[0], bounds=bounds)


def generic_principles(instruction: str) -> list[Principle]:
    """A checklist built from the instruction text alone (4 follow, 3 keep, 3 quality).

    Used when no teacher is configured; it fits DEFAULT_BOUNDS. Whitespace in the
    instruction is collapsed so that the first question stays on one line.
    """
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError("instruction must be a non-empty string")
    text = " ".join(instruction.split())
    return [
        Principle(f'Is the instruction "{text}" carried out?', "follow"),
        Principle("Is the edit applied to the right object or region?", "follow"),
        Principle("Do the edited details match the instruction (colour, count, position)?", "follow"),
        Principle("Is the edited image visibly changed from the source?", "follow"),
        Principle("Is the background unchanged apart from the requested edit?", "keep"),
        Principle("Are the objects the instruction does not mention unchanged?", "keep"),
        Principle("Are the layout and viewpoint of the source kept?", "keep"),
        Principle("Is the edited image free of artefacts, blur and distortion?", "quality"),
        Principle("Is the edited image free of added borders or frames?", "quality"),
        Principle("Does the edit look natural and consistent with the scene?", "quality"),
    ]
