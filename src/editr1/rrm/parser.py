"""Parse what the RRM writes, and write it (DESIGN §4).

An RRM output is, in this order: free-text reasoning; a one-line JSON list
`[{"question": ..., "score": 0|1}, ...]`; `{"average_score": x}`; `<score>s</score>` with s in
[0, 10]. `parse_output` is the strict `parsed` readout: it never raises on any string, and a
`Judgement` says whether the score was found (`parse_ok`, `error`) and, separately, whether
the principle answers were (`principles_ok`, `principles_error`). `render_output` is its
inverse, used to write SFT targets.

    >>> j = parse_output(render_output("ok", ["Is it blue?"], [1], 9))
    >>> (j.score, j.principle_scores, j.average)
    (9.0, (1,), 1.0)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

# Reason codes, for parse-rate dashboards.
SCORE_ERRORS = ("no_score_tag", "unclosed_score_tag", "score_not_number", "score_out_of_range")
PRINCIPLES_ERRORS = (
    "no_json_list", "bad_json", "bad_principle_item", "no_average", "bad_average", "average_mismatch"
)

SCORE_OPEN = "<score>"
# The paper's prompt closes the tag with a backslash; accept both, nothing else.
SCORE_CLOSES = ("</score>", "<\\score>")

_SCORE_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_LIST_START = re.compile(r"\[\s*\{")
_JSON_NUMBER = r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_AVERAGE = re.compile(r'\{\s*"average_score"\s*:\s*(' + _JSON_NUMBER + r")\s*\}", re.ASCII)
_AVERAGE_KEY = '"average_score"'
# Bounds the work on degenerate output (decoding is tried at each '[{'); the answer list is
# near the end, so only the last few starts are tried.
_MAX_LIST_TRIES = 64
# A written average may round the mean to 2 decimals.
_AVERAGE_TOLERANCE = 0.01


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite JSON constant {name}")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


@dataclass(frozen=True)
class Judgement:
    """One parsed RRM output.

    score: the final score s, or None when `parse_ok` is False.
    principle_scores / principle_questions: the 0/1 answers and their questions, in the order
        of the JSON list (empty when no valid list was found).
    average: the written {"average_score": x}, or None.
    parse_ok: the score tag was found, closed, a number and within range.
    error: why `parse_ok` is False (one of SCORE_ERRORS), else None.
    reasoning: the free text before the JSON list (before the score tag when there is none).
    principles_ok: a valid JSON list and a consistent average were found.
    principles_error: why `principles_ok` is False (one of PRINCIPLES_ERRORS), else None.
    """

    score: float | None
    principle_scores: tuple[int, ...]
    principle_questions: tuple[str, ...]
    average: float | None
    parse_ok: bool
    error: str | None
    reasoning: str
    principles_ok: bool
    principles_error: str | None


def _parse_score(text: str, min_score: float, max_score: float) -> tuple[int, float | None, str | None]:
    """(start of the last score tag or len(text), score, error code)."""
    start = text.rfind(SCORE_OPEN)
    if start < 0:
        return len(text), None, "no_score_tag"
    body_start = start + len(SCORE_OPEN)
    ends = [i for i in (text.find(c, body_start) for c in SCORE_CLOSES) if i >= 0]
    if not ends:
        return start, None, "unclosed_score_tag"
    body = text[body_start:min(ends)].strip(" \t\r\n")
    if _SCORE_NUMBER.fullmatch(body) is None:
        return start, None, "score_not_number"
    value = float(body)  # a huge digit string gives inf, caught by the range check
    if not (math.isfinite(value) and min_score <= value <= max_score):
        return start, None, "score_out_of_range"
    return start, value + 0.0, None  # + 0.0 turns -0.0 into 0.0


def _find_list(head: str) -> tuple[list[object] | None, int, int, str | None]:
    """The JSON list of answers in `head`: (list, start, end, error code).

    Among the lists of objects that decode at one of the last _MAX_LIST_TRIES '[{', the one
    ending last wins (ties: the outermost); a list quoted inside a question or in the
    reasoning ends earlier.
    """
    best: tuple[list[object], int, int] | None = None
    starts = list(_LIST_START.finditer(head))[-_MAX_LIST_TRIES:]
    for match in starts:
        try:
            value, end = _DECODER.raw_decode(head, match.start())
        except (ValueError, RecursionError):
            continue
        if not (isinstance(value, list) and all(isinstance(v, dict) for v in value)):
            continue
        if best is None or end > best[2]:
            best = (value, match.start(), end)
    if best is None:
        return None, -1, -1, "bad_json" if starts else "no_json_list"
    return best[0], best[1], best[2], None


def _answers(items: list[object]) -> tuple[tuple[str, ...], tuple[int, ...]] | None:
    questions, scores = [], []
    for item in items:
        if not isinstance(item, dict):
            return None
        question, score = item.get("question"), item.get("score")
        if not isinstance(question, str) or type(score) is not int or score not in (0, 1):
            return None
        questions.append(question)
        scores.append(score)
    return tuple(questions), tuple(scores)


def _find_average(region: str) -> tuple[float | None, int, str | None]:
    """The last {"average_score": x} in `region`: (x, start, error code)."""
    matches = list(_AVERAGE.finditer(region))
    if not matches:
        key = region.rfind(_AVERAGE_KEY)
        if key < 0:
            return None, -1, "no_average"
        brace = region.rfind("{", 0, key)
        return None, brace if brace >= 0 else key, "bad_average"
    match = matches[-1]
    value = float(match.group(1))
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        return None, match.start(), "bad_average"
    return value, match.start(), None


def parse_output(text: str, *, min_score: float = 0.0, max_score: float = 10.0) -> Judgement:
    """Parse one RRM output into a `Judgement`; never raises on a string.

    The score is the content of the LAST `<score>` tag, closed by `</score>` or `<\\score>`:
    a plain decimal number (no sign other than '-', no exponent, no nan/inf) within
    [min_score, max_score]. The JSON list and the average are read from the text before that
    tag; their absence or inconsistency sets `principles_ok` False but does not fail the parse.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    if not min_score < max_score:
        raise ValueError(f"need min_score < max_score, got {min_score} and {max_score}")
    tag_start, score, error = _parse_score(text, min_score, max_score)
    head = text[:tag_start]

    items, list_start, list_end, principles_error = _find_list(head)
    questions: tuple[str, ...] = ()
    scores: tuple[int, ...] = ()
    if items is not None:
        answers = _answers(items)
        if answers is None:
            principles_error = "bad_principle_item"
        else:
            questions, scores = answers

    region_start = list_end if items is not None else 0
    average, avg_start, average_error = _find_average(head[region_start:])
    if principles_error is None:
        principles_error = average_error
    if principles_error is None and average is not None and scores:
        if abs(average - sum(scores) / len(scores)) > _AVERAGE_TOLERANCE:
            principles_error = "average_mismatch"

    if items is not None:
        reasoning_end = list_start
    elif avg_start >= 0:
        reasoning_end = avg_start
    else:
        reasoning_end = len(head)
    return Judgement(
        score=score,
        principle_scores=scores,
        principle_questions=questions,
        average=average,
        parse_ok=error is None,
        error=error,
        reasoning=head[:reasoning_end].strip(),
        principles_ok=principles_error is None,
        principles_error=principles_error,
    )


def reward(judgement: Judgement, fallback: float = 0.0) -> float:
    """The `parsed` reward: the score when the parse succeeded, else `fallback`."""
    if judgement.parse_ok and judgement.score is not None:
        return judgement.score
    return float(fallback)


def format_score(score: float) -> str:
    """A score as the RRM writes it: '7' for 7.0, '7.5' for 7.46 (at most 1 decimal)."""
    if not math.isfinite(score):
        raise ValueError(f"score must be finite, got {score}")
    text = f"{round(score, 1) + 0.0:.1f}"
    return text[:-2] if text.endswith(".0") else text


def render_output(
    reasoning: str,
    questions: Sequence[str],
    scores: Sequence[int],
    final_score: float,
    *,
    min_score: float = 0.0,
    max_score: float = 10.0,
) -> str:
    """Write an RRM output (an SFT target); `parse_output` reads it back.

    Lines: the reasoning (omitted when empty), the one-line JSON list of
    {"question", "score"}, {"average_score": x} with x the mean of `scores` to 2 decimals,
    and `<score>s</score>` with s = format_score(final_score).
    """
    if not isinstance(reasoning, str):
        raise TypeError("reasoning must be a string")
    if len(questions) != len(scores) or not questions:
        raise ValueError(f"need as many scores as questions (≥ 1), got {len(questions)} and {len(scores)}")
    for i, (q, s) in enumerate(zip(questions, scores)):
        if not isinstance(q, str):
            raise TypeError(f"question {i} must be a string")
        if type(s) is not int or s not in (0, 1):
            raise ValueError(f"score {i} must be the int 0 or 1, got {s!r}")
    if not (math.isfinite(final_score) and min_score <= final_score <= max_score):
        raise ValueError(f"final_score {final_score} outside [{min_score}, {max_score}]")
    answers = json.dumps(
        [{"question": q, "score": s} for q, s in zip(questions, scores)],
        ensure_ascii=False,
        separators=(", ", ": "),
    )
    average = f'{{"average_score": {sum(scores) / len(scores):.2f}}}'
    lines = [reasoning.strip()] if reasoning.strip() else []
    lines += [answers, average, f"{SCORE_OPEN}{format_score(final_score)}{SCORE_CLOSES[0]}"]
    return "\n".join(lines)


def score_token_strings(min_score: int = 0, max_score: int = 10) -> list[str]:
    """The score strings the `expected` readout weighs: ['0', '1', ..., '10'] by default."""
    if not (isinstance(min_score, int) and isinstance(max_score, int) and min_score <= max_score):
        raise ValueError(f"need integers min_score <= max_score, got {min_score!r}, {max_score!r}")
    return [str(s) for s in range(min_score, max_score + 1)]
