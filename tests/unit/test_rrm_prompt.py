"""Principles and prompt rendering for the RRM (editr1.rrm.principles, editr1.rrm.prompt)."""

from __future__ import annotations

import json

import pytest

from editr1.rrm import (
    DEFAULT_BOUNDS,
    PROMPT_VERSION,
    SYSTEM_PROMPT,
    Principle,
    generic_principles,
    parse_principles_json,
    prompt_hash,
    render_messages,
    render_user_text,
    validate_principles,
)


def _checklist(follow: int = 3, keep: int = 3, quality: int = 2) -> list[dict[str, str]]:
    items = [{"question": f"Is follow point {i} met?", "category": "follow"} for i in range(follow)]
    items += [{"question": f"Is keep point {i} met?", "category": "keep"} for i in range(keep)]
    items += [{"question": f"Is quality point {i} met?", "category": "quality"} for i in range(quality)]
    return items


# ---------------------------------------------------------------- principles


def test_principle_dict_round_trip() -> None:
    p = Principle("Is the circle blue?", "follow")
    assert p.to_dict() == {"question": "Is the circle blue?", "category": "follow"}
    assert Principle.from_dict(p.to_dict()) == p
    assert Principle.from_dict({"question": "  Is it kept? ", "category": "keep"}).question == "Is it kept?"


def test_validate_accepts_dicts_and_principles_in_order() -> None:
    items = _checklist(4, 3, 3)
    items[0] = Principle("Is the circle blue?", "follow")
    out = validate_principles(items)
    assert len(out) == 10
    assert out[0] == Principle("Is the circle blue?", "follow")
    assert [p.category for p in out] == ["follow"] * 4 + ["keep"] * 3 + ["quality"] * 3


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ({"question": "x", "category": "follow"}, "must be a list"),
        ("[]", "must be a list"),
        ([{"question": "Is it blue?"}], "principle 0: missing key(s) category"),
        ([{"category": "keep"}], "principle 0: missing key(s) question"),
        ([{"question": "Is it blue?", "category": "follow", "why": "x"}], "unknown key(s) why"),
        ([{"question": "Is it blue?", "category": "style"}], "unknown category 'style'"),
        ([{"question": "Is it blue?", "category": "Follow"}], "unknown category 'Follow'"),
        ([{"question": "   ", "category": "follow"}], "question is empty"),
        ([{"question": 3, "category": "follow"}], "question must be a string"),
        ([{"question": "Is it\nblue?", "category": "follow"}], "several lines"),
        (["Is it blue?"], "expected an object"),
        (_checklist(2, 3, 2), "expected 3-4 'follow' principles, got 2"),
        (_checklist(3, 5, 2), "expected 3-4 'keep' principles, got 5"),
        (_checklist(3, 3, 1), "expected 2-3 'quality' principles, got 1"),
        ([], "expected 3-4 'follow' principles, got 0"),
    ],
)
def test_validate_rejects_bad_input_with_one_line_message(items: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_principles(items)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_validate_rejects_duplicate_questions() -> None:
    items = _checklist()
    items[1] = {"question": items[0]["question"].upper(), "category": "follow"}
    with pytest.raises(ValueError, match="principle 1: duplicate question"):
        validate_principles(items)


def test_validate_bounds_are_configurable() -> None:
    small = _checklist(1, 1, 0)
    assert len(validate_principles(small, bounds={"follow": (1, 1), "keep": (1, 2), "quality": (0, 0)})) == 2
    with pytest.raises(ValueError, match="expected 3-4 'follow'"):
        validate_principles(small)
    with pytest.raises(ValueError, match="bounds must have exactly the keys"):
        validate_principles(small, bounds={"follow": (1, 1)})
    with pytest.raises(ValueError, match="bad bounds for 'keep'"):
        validate_principles(small, bounds={"follow": (1, 1), "keep": (2, 1), "quality": (0, 0)})
    assert dict(DEFAULT_BOUNDS) == {"follow": (3, 4), "keep": (3, 4), "quality": (2, 3)}


def test_parse_principles_json_in_fence_with_prose() -> None:
    items = _checklist()
    text = "Here is the checklist you asked for:\n```json\n" + json.dumps(items, indent=2) + "\n```\nDone."
    assert [p.to_dict() for p in parse_principles_json(text)] == items


def test_parse_principles_json_bare_and_in_prose_and_in_object() -> None:
    items = _checklist(4, 4, 3)
    assert len(parse_principles_json(json.dumps(items))) == 11
    prose = "Sure [see below]. " + json.dumps(items) + " Hope this helps [1]."
    assert [p.to_dict() for p in parse_principles_json(prose)] == items
    wrapped = json.dumps({"principles": items})
    assert [p.to_dict() for p in parse_principles_json(wrapped)] == items


def test_parse_principles_json_errors() -> None:
    with pytest.raises(ValueError, match="no JSON list of principles found"):
        parse_principles_json("I cannot help with that [sorry].")
    with pytest.raises(ValueError, match="no JSON list of principles found"):
        parse_principles_json('[{"question": "Is it blue?", "category": "follow"')  # truncated
    with pytest.raises(ValueError, match="expected 3-4 'follow' principles, got 1"):
        parse_principles_json('[{"question": "Is it blue?", "category": "follow"}]')
    with pytest.raises(ValueError, match="unknown category"):
        parse_principles_json('```json\n[{"question": "Is it blue?", "category": "colour"}]\n```')


def test_generic_principles_fit_the_default_bounds() -> None:
    ps = generic_principles("  make the red\ncircle   blue ")
    assert validate_principles(ps) == ps
    assert len(ps) == 10
    assert '"make the red circle blue"' in ps[0].question
    assert len({p.question for p in ps}) == 10
    with pytest.raises(ValueError, match="non-empty"):
        generic_principles("   ")


# ---------------------------------------------------------------- prompt


def test_render_user_text_is_compact_and_numbered() -> None:
    ps = [Principle("Is the circle blue?", "follow"), Principle("Is the square kept?", "keep")]
    assert render_user_text(" make the circle blue ", ps) == (
        "Instruction: make the circle blue\nQuestions:\n1. Is the circle blue?\n2. Is the square kept?"
    )
    with pytest.raises(ValueError, match="at least one principle"):
        render_user_text("x", [])
    with pytest.raises(TypeError, match="principle 0 must be a Principle"):
        render_user_text("x", [{"question": "q", "category": "keep"}])  # type: ignore[list-item]


def test_render_messages_layout_and_images_passed_through() -> None:
    source, edited = object(), object()
    ps = generic_principles("make the circle blue")
    msgs = render_messages("make the circle blue", ps, source, edited)
    assert msgs[0] == {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]}
    assert msgs[1]["role"] == "user"
    content = msgs[1]["content"]
    assert [c["type"] for c in content] == ["text", "image", "text", "image", "text"]
    assert content[0]["text"] == "Source image:" and content[2]["text"] == "Edited image:"
    assert content[1]["image"] is source and content[3]["image"] is edited
    assert content[4]["text"] == render_user_text("make the circle blue", ps)
    no_images = render_messages("make the circle blue", ps)
    assert no_images[1]["content"][1] == {"type": "image", "image": None}
    custom = render_messages("make the circle blue", ps, system_prompt="Judge it.")
    assert custom[0]["content"][0]["text"] == "Judge it."


def test_system_prompt_states_the_output_format_briefly() -> None:
    for needle in ('"question"', '"score"', '"average_score"', "<score>s</score>", "0", "10"):
        assert needle in SYSTEM_PROMPT
    assert len(SYSTEM_PROMPT.split()) < 110  # read by a tiny model with a 2000-token vocabulary


def test_prompt_hash_is_stable_and_sensitive() -> None:
    ps = generic_principles("make the circle blue")
    h = prompt_hash("make the circle blue", ps)
    assert h == prompt_hash("make the circle blue", list(ps))
    assert len(h) == 64 and int(h, 16) >= 0
    others = {
        prompt_hash("make the circle red", ps),
        prompt_hash("make the circle blue", ps[:-1]),
        prompt_hash("make the circle blue", ps, system_prompt=SYSTEM_PROMPT + " "),
        prompt_hash("make the circle blue", ps, extra=["sha-of-source", "sha-of-edit"]),
        prompt_hash("make the circle blue", ps, extra=["sha-of-sourcesha-of-edit"]),
    }
    assert h not in others and len(others) == 5
    assert PROMPT_VERSION
    with pytest.raises(TypeError):
        prompt_hash("make the circle blue", ps, extra=[1])  # type: ignore[list-item]
