"""The strict RRM output parser and its inverse (editr1.rrm.parser, DESIGN §4)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from editr1.rrm import (
    PRINCIPLES_ERRORS,
    SCORE_ERRORS,
    format_score,
    parse_output,
    render_output,
    reward,
    score_token_strings,
)

VALID = (
    "before: red circle, green square. after: blue circle, green square. "
    "follow: circle now blue, yes. keep: square unchanged, yes. quality: clean, no.\n"
    '[{"question": "Is the circle blue?", "score": 1}, {"question": "Is the square kept?", "score": 1}, '
    '{"question": "Is the image clean?", "score": 0}]\n'
    '{"average_score": 0.67}\n'
    "<score>7.5</score>"
)


def _tail(score: str, close: str = "</score>") -> str:
    return '[{"question": "q", "score": 1}]\n{"average_score": 1.00}\n<score>' + score + close


# ---------------------------------------------------------------- hand-written cases


def test_valid_output() -> None:
    j = parse_output(VALID)
    assert j.parse_ok and j.error is None and j.score == 7.5
    assert j.principle_scores == (1, 1, 0)
    assert j.principle_questions == ("Is the circle blue?", "Is the square kept?", "Is the image clean?")
    assert j.average == 0.67
    assert j.principles_ok and j.principles_error is None
    assert j.reasoning.startswith("before: red circle") and j.reasoning.endswith("clean, no.")
    assert reward(j) == 7.5


def test_backslash_closing_variant() -> None:
    j = parse_output(_tail("8", "<\\score>"))
    assert j.parse_ok and j.score == 8.0 and j.principles_ok


@pytest.mark.parametrize("score", ["0", "10", "10.0", " 6 ", "\n3.25\n", "007", "-0"])
def test_scores_in_range(score: str) -> None:
    j = parse_output(_tail(score))
    assert j.parse_ok and j.score == float(score) and str(j.score) != "-0.0"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("the edit looks fine, 8/10", "no_score_tag"),
        ("", "no_score_tag"),
        (_tail("11"), "score_out_of_range"),
        (_tail("-1"), "score_out_of_range"),
        (_tail("10.01"), "score_out_of_range"),
        (_tail("9" * 400), "score_out_of_range"),
        (_tail("nan"), "score_not_number"),
        (_tail("NaN"), "score_not_number"),
        (_tail("inf"), "score_not_number"),
        (_tail("1e1"), "score_not_number"),
        (_tail("+5"), "score_not_number"),
        (_tail("5."), "score_not_number"),
        (_tail("seven"), "score_not_number"),
        (_tail(""), "score_not_number"),
        (_tail("\u0667"), "score_not_number"),  # Arabic-Indic 7: float() would take it
        (_tail("7", "</score >"), "unclosed_score_tag"),
        (_tail("7", "</Score>"), "unclosed_score_tag"),
        ('[{"question": "q", "score": 1}]\n{"average_score": 1.00}\n<score>', "unclosed_score_tag"),
        ("reasoning... <score>7", "unclosed_score_tag"),
        ("<score>5</score> and then <score>", "unclosed_score_tag"),
        ("\x00\ufffd<score>>}{][</score>", "score_not_number"),
    ],
)
def test_failures(text: str, error: str) -> None:
    j = parse_output(text)
    assert not j.parse_ok and j.score is None and j.error == error
    assert reward(j) == 0.0 and reward(j, fallback=-1.0) == -1.0


def test_last_score_tag_wins() -> None:
    j = parse_output("first guess <score>3</score>, on reflection <score>8</score>")
    assert j.parse_ok and j.score == 8.0
    assert not parse_output("<score>3</score> <score>12</score>").parse_ok


def test_custom_score_range() -> None:
    assert parse_output("<score>0.5</score>", min_score=0.0, max_score=1.0).score == 0.5
    assert parse_output("<score>2</score>", min_score=0.0, max_score=1.0).error == "score_out_of_range"
    with pytest.raises(ValueError, match="min_score < max_score"):
        parse_output("<score>1</score>", min_score=1.0, max_score=1.0)


def test_missing_list_and_average_do_not_fail_the_score() -> None:
    j = parse_output("looks right. <score>9</score>")
    assert j.parse_ok and j.score == 9.0
    assert not j.principles_ok and j.principles_error == "no_json_list"
    assert j.principle_scores == () and j.average is None and j.reasoning == "looks right."

    j = parse_output('ok\n[{"question": "q1", "score": 1}, {"question": "q2", "score": 0}]\n<score>5</score>')
    assert j.parse_ok and j.principle_scores == (1, 0) and j.principle_questions == ("q1", "q2")
    assert j.principles_error == "no_average" and j.reasoning == "ok"


@pytest.mark.parametrize(
    ("middle", "error"),
    [
        ('[{"question": "q", "score": 1}\n{"average_score": 1.0}', "bad_json"),
        ('[{"question": "q", "score": 2}]\n{"average_score": 1.0}', "bad_principle_item"),
        ('[{"question": "q", "score": true}]\n{"average_score": 1.0}', "bad_principle_item"),
        ('[{"question": "q", "score": 1.0}]\n{"average_score": 1.0}', "bad_principle_item"),
        ('[{"q": "q", "score": 1}]\n{"average_score": 1.0}', "bad_principle_item"),
        ('[{"question": "q", "score": NaN}]\n{"average_score": 1.0}', "bad_json"),
        ('[{"question": "q", "score": 1}]\n{"average_score": NaN}', "bad_average"),
        ('[{"question": "q", "score": 1}]\n{"average_score": 1.5}', "bad_average"),
        ('[{"question": "q", "score": 1}, {"question": "r", "score": 0}]\n{"average_score": 0.9}', "average_mismatch"),
    ],
)
def test_principle_problems_are_reported_not_fatal(middle: str, error: str) -> None:
    j = parse_output("reasoning\n" + middle + "\n<score>4</score>")
    assert j.parse_ok and j.score == 4.0
    assert not j.principles_ok and j.principles_error == error


def test_garbage() -> None:
    for text in ["\x00" * 50, "<score><score></score>", "[[[[{{{{", '[{"a": ' * 3000, "}" * 1000]:
        j = parse_output(text)
        assert j.error in SCORE_ERRORS and j.principles_error in PRINCIPLES_ERRORS


# ---------------------------------------------------------------- rendering


def test_render_output_exact() -> None:
    text = render_output("before: red circle. after: blue circle.", ["Is it blue?", "Is it kept?"], [1, 0], 6.0)
    assert text == (
        "before: red circle. after: blue circle.\n"
        '[{"question": "Is it blue?", "score": 1}, {"question": "Is it kept?", "score": 0}]\n'
        '{"average_score": 0.50}\n'
        "<score>6</score>"
    )
    assert render_output("", ["q"], [1], 10).startswith('[{"question": "q", "score": 1}]')


@pytest.mark.parametrize(
    ("score", "text"), [(7.0, "7"), (7, "7"), (0.0, "0"), (-0.0, "0"), (10.0, "10"), (7.25, "7.2"), (7.46, "7.5"), (9.96, "10"), (0.04, "0")]
)
def test_format_score(score: float, text: str) -> None:
    assert format_score(score) == text


def test_render_output_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="as many scores as questions"):
        render_output("r", ["a", "b"], [1], 5)
    with pytest.raises(ValueError, match="as many scores as questions"):
        render_output("r", [], [], 5)
    with pytest.raises(ValueError, match="score 0 must be the int 0 or 1"):
        render_output("r", ["a"], [2], 5)
    with pytest.raises(ValueError, match="score 0 must be the int 0 or 1"):
        render_output("r", ["a"], [True], 5)
    with pytest.raises(ValueError, match="outside"):
        render_output("r", ["a"], [1], 10.5)
    with pytest.raises(ValueError, match="outside"):
        render_output("r", ["a"], [1], math.nan)


def test_score_token_strings() -> None:
    assert score_token_strings() == ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]
    assert score_token_strings(1, 3) == ["1", "2", "3"]
    with pytest.raises(ValueError):
        score_token_strings(3, 1)


# ---------------------------------------------------------------- properties

_FRAGMENTS = [
    "<score>", "</score>", "<\\score>", "<score", "/score>", "</score >", "<Score>",
    "7", "10", "11", "-1", "0.5", "9.99", "nan", "inf", "1e1", ".", " ", "\n", "\u0667",
    "[", "]", "{", "}", '"', ",", ":", '[{"question": "q", "score": 1}]', '{"question": "q", "score": 0}',
    '{"average_score": ', "0.50}", '"average_score"', "NaN", "Infinity", "true", "null",
]
_NEAR_MISS = st.lists(st.sampled_from(_FRAGMENTS) | st.text(max_size=4), max_size=30).map("".join)


def _check_invariants(text: str) -> None:
    j = parse_output(text)
    assert j.parse_ok == (j.error is None) == (j.score is not None)
    if j.parse_ok:
        assert j.score is not None and math.isfinite(j.score) and 0.0 <= j.score <= 10.0
        assert reward(j, fallback=-3.0) == j.score
    else:
        assert j.error in SCORE_ERRORS and reward(j, fallback=-3.0) == -3.0
    assert j.principles_ok == (j.principles_error is None)
    assert j.principles_error is None or j.principles_error in PRINCIPLES_ERRORS
    assert len(j.principle_scores) == len(j.principle_questions)
    assert set(j.principle_scores) <= {0, 1}
    assert j.average is None or 0.0 <= j.average <= 1.0


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_fuzz_never_raises(text: str) -> None:
    _check_invariants(text)


@settings(max_examples=300, deadline=None)
@given(_NEAR_MISS)
def test_fuzz_near_misses_never_raise(text: str) -> None:
    _check_invariants(text)


@settings(max_examples=150, deadline=None)
@given(
    reasoning=st.text(max_size=60),
    answers=st.lists(st.tuples(st.text(max_size=30), st.integers(0, 1)), min_size=1, max_size=12),
    final_score=st.floats(0.0, 10.0),
)
def test_round_trip(reasoning: str, answers: list[tuple[str, int]], final_score: float) -> None:
    questions = [q for q, _ in answers]
    scores = [s for _, s in answers]
    j = parse_output(render_output(reasoning, questions, scores, final_score))
    assert j.parse_ok and j.principles_ok, (j.error, j.principles_error)
    assert j.score == round(final_score, 1)
    assert j.principle_questions == tuple(questions)
    assert j.principle_scores == tuple(scores)
    assert j.average == float(f"{sum(scores) / len(scores):.2f}")
    assert j.reasoning == reasoning.strip()
