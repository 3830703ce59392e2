"""The text a tiny RRM tokenizer is trained on: everything the RRM reads and writes.

    from editr1.rrm.corpus import rrm_corpus, trajectory_corpus
    lines = rrm_corpus([t["text"] for t in trajectories], [render_user_text(i, ps) for i, ps in contexts])
    model, processor = tiny_rrm(lines, workdir, spec)      # editr1.models.rrm

A byte-level BPE covers any text, but a merge only exists for what the corpus holds: training it
on the system prompt, the image captions of the user turn, the user texts (instructions and
numbered questions) and the teacher's trajectories makes the words the RRM writes a few tokens
each, which shortens every SFT target and every generation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from editr1.rrm.parser import render_output
from editr1.rrm.principles import Principle
from editr1.rrm.prompt import SYSTEM_PROMPT, render_user_text

# The fixed text pieces of `render_messages`' user turn.
USER_CAPTIONS = ("Source image:", "Edited image:")


def rrm_corpus(trajectory_texts: Iterable[str], user_texts: Iterable[str]) -> list[str]:
    """Lines for `train_tokenizer`: the system prompt, the user-turn captions, ``user_texts`` and
    ``trajectory_texts``, plus one rendered output per score 0..10 (so every score and the score
    tags appear even in a corpus without them). Empty strings are dropped; order is kept, so the
    tokenizer trained on it is reproducible."""
    examples = [render_output("example", ["Is it done?"], [1], float(s)) for s in range(11)]
    lines = [SYSTEM_PROMPT, *USER_CAPTIONS, *user_texts, *trajectory_texts, *examples]
    return [line for line in lines if line]


def trajectory_corpus(trajectories: Sequence[dict[str, Any]]) -> list[str]:
    """`rrm_corpus` of coldstart trajectory rows (`load_trajectories`): their texts and user texts
    (one per distinct context)."""
    user_texts: dict[str, str] = {}
    for row in trajectories:
        if row["context_id"] not in user_texts:
            principles = [Principle(p["question"], p["category"]) for p in row["principles"]]
            user_texts[row["context_id"]] = render_user_text(row["instruction"], principles)
    return rrm_corpus([row["text"] for row in trajectories], user_texts.values())
