"""The tiny RRM's phrase tokenizer: round trips, score tokens, short targets, content words kept whole."""

from __future__ import annotations

import pytest

from editr1.models.tokenizer import score_token_ids
from editr1.rrm.corpus import content_words, rrm_corpus, train_phrase_tokenizer
from editr1.rrm.parser import render_output
from editr1.rrm.principles import Principle
from editr1.rrm.prompt import render_user_text

QUESTIONS = ["Is the red circle removed?", "Are the other shapes unchanged?", "Is the background unchanged?"]


def trajectory(source: str, edited: str, answers: list[int], score: float) -> str:
    reasoning = f"source: {source}, on gray. edited: {edited}, on gray.\n1. circle: gone. yes"
    return render_output(reasoning, QUESTIONS, answers, score)


ROWS = [
    {"context_id": f"c{i}", "instruction": instruction, "text": trajectory(src, dst, [1, 1, 0], 7.0)}
    for i, (instruction, src, dst) in enumerate([
        ("Remove the red circle.", "red circle top left", "no shapes"),
        ("Take the red circle out of the picture.", "red circle center", "blue square center"),
        ("Remove the blue square.", "blue square bottom right", "no shapes"),
        ("Change the red circle to blue.", "red circle top right", "blue circle top right"),
        ("Paint the blue square red.", "blue square top left", "red square top left"),
    ] * 2)
]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    users = [render_user_text(r["instruction"], [Principle(q, "follow") for q in QUESTIONS]) for r in ROWS]
    return rrm_corpus([r["text"] for r in ROWS], users)


def test_content_words_are_the_described_and_distinctive_words():
    words = content_words(ROWS, min_count=2, max_share=0.6)
    assert {"red", "blue", "circle", "square", "top", "left", "gray", "source", "edited"} <= set(words)
    assert "the" not in words and "on" not in words  # function words stay template glue
    # "remove" is in 4 of 10 instructions (at most 60%); "change" in 2: both distinctive
    assert {"remove", "change"} <= set(words)
    assert "remove" not in content_words(ROWS, min_count=2, max_share=0.3)


def test_a_content_word_is_one_token_and_never_merged(tmp_path, texts):
    words = content_words(ROWS, min_count=2, max_share=0.6)
    tok = train_phrase_tokenizer(texts, 1000, tmp_path / "tok", words=words)
    pieces = [tok.decode([i]) for i in tok(ROWS[1]["text"])["input_ids"]]
    assert " circle" in pieces and " center" in pieces and "source" in pieces
    assert not any(("red" in p or "circle" in p) and p.strip() not in ("red", "circle") for p in pieces), pieces
    # Template text between content words still merges across spaces.
    assert any(" " in p.strip() for p in pieces), pieces
    assert len(tok) <= 1000
    for row in ROWS:
        assert tok.decode(tok(row["text"])["input_ids"]) == row["text"]
    assert len(score_token_ids(tok)) == 11


def test_a_whole_word_only_is_split_out(tmp_path, texts):
    tok = train_phrase_tokenizer([*texts, "reduced redness"], 400, tmp_path / "tok", words=["red"])
    assert tok.decode(tok("reduced redness, red")["input_ids"]) == "reduced redness, red"
    pieces = [p for p, _ in tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str("reduced red, a red")]
    assert pieces == ["reduced", "Ġred", ",Ġa", "Ġred"]


def test_content_words_must_be_lower_case_letters(tmp_path, texts):
    with pytest.raises(ValueError, match="content words"):
        train_phrase_tokenizer(texts, 400, tmp_path / "tok", words=["Red"])
