"""The text a tiny RRM tokenizer is trained on (everything the RRM reads and writes), and a
phrase-level BPE for it.

    from editr1.rrm.corpus import rrm_corpus, train_phrase_tokenizer, trajectory_corpus
    lines = rrm_corpus([t["text"] for t in trajectories], [render_user_text(i, ps) for i, ps in contexts])
    model, processor = tiny_rrm(lines, workdir, spec)             # word-level BPE (editr1.models)
    tokenizer = train_phrase_tokenizer(lines, 2000, workdir / "tokenizer")   # phrase-level BPE

A byte-level BPE covers any text, but a merge only exists for what the corpus holds: training it
on the system prompt, the image captions of the user turn, the user texts (instructions and
numbered questions) and the teacher's trajectories makes what the RRM reads and writes short.

Why a phrase-level BPE. `editr1.models.tokenizer.train_tokenizer` splits text into words first
(as Qwen's tokenizer does), so a token is at most one word. The RRM's language is templated: with
ten principles an SFT example is ~600 word tokens (system prompt ~130, user turn ~160, teacher
trajectory ~320, of which ~190 are the JSON list repeating the questions), which made a tiny RRM
train at ~0.3 steps/s (batch 32) on one CPU thread. Letting merges cross spaces (digits stay one
per token, so scores and the expected readout are unchanged) brings an example to ~180 tokens and
a step to ~0.6 s. Same contract as `train_tokenizer`: Qwen special tokens and chat template, pad
``<|endoftext|>``, eos ``<|im_end|>``, left padding, "0".."10", "<score>", "</score>" single tokens.

Content words stay words. Merges across spaces also fuse what the RRM must perceive ("blue star
center, " became one of ~hundreds of colour × shape × position tokens, with no shared structure,
and a question copied from the prompt got different tokens in the answer): a tiny RRM trained on
that wrote one constant judgement whatever the images. `content_words` (the words of the teacher's
image descriptions and the distinctive words of the instructions) are kept as single tokens of
their own, so only the fixed template text between them is merged into phrases.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from editr1.models.tokenizer import CHAT_TEMPLATE, ENDOFTEXT, IM_END, SCORE_ADDED_TOKENS, SPECIAL_TOKENS
from editr1.rrm.parser import render_output
from editr1.rrm.principles import Principle
from editr1.rrm.prompt import SYSTEM_PROMPT, render_user_text

# The fixed text pieces of `render_messages`' user turn.
USER_CAPTIONS = ("Source image:", "Edited image:")
_WORD = re.compile(r"[a-z]+")
# Function words are template glue, not content: they stay free to merge into phrases.
_FUNCTION_WORDS = frozenset("a an and are at by for from in into is it no not of on or out over the to with".split())


def rrm_corpus(trajectory_texts: Iterable[str], user_texts: Iterable[str]) -> list[str]:
    """Lines for a tokenizer: the system prompt and the user-turn captions, ``user_texts`` and
    ``trajectory_texts``, plus one rendered output per score 0..10 (so every score and the score
    tags appear even in a corpus without them). The system prompt and captions are repeated once
    per trajectory, as often as the model reads them, so a frequency-driven BPE merges them too.
    Empty strings are dropped; order is kept, so the tokenizer trained on it is reproducible."""
    trajectory_texts = list(trajectory_texts)
    examples = [render_output("example", ["Is it done?"], [1], float(s)) for s in range(11)]
    fixed = [SYSTEM_PROMPT, *USER_CAPTIONS] * max(1, len(trajectory_texts))
    lines = [*fixed, *user_texts, *trajectory_texts, *examples]
    return [line for line in lines if line]


def train_phrase_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: Path,
                           words: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """A byte-level BPE whose merges may cross spaces (see the module docstring), saved in ``out_dir``.

    Digits are split one per token before merging, so no token spans a digit. Each of ``words``
    (lower-case letters), with its leading space, is a piece of its own wherever it stands as a
    whole word: never merged with its neighbours (one token once the corpus holds it often enough).
    ``len(tokenizer) <= vocab_size``. Reload with `PreTrainedTokenizerFast.from_pretrained(out_dir)`.
    """
    words = sorted(set(words))
    if any(not _WORD.fullmatch(w) for w in words):
        raise ValueError(f"content words must be lower-case letters: {[w for w in words if not _WORD.fullmatch(w)][:5]}")
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(SPECIAL_TOKENS) + len(SCORE_ADDED_TOKENS) + len(alphabet):
        raise ValueError(f"vocab_size {vocab_size} cannot hold the bytes and special tokens")
    bpe = Tokenizer(models.BPE())
    pieces = [pre_tokenizers.Digits(individual_digits=True)]
    if words:  # a content word is a piece of its own (a whole word only: "red" is not split out of "reduced")
        pattern = Regex(r" ?\b(?:" + "|".join(words) + r")\b")  # with its leading space, as Qwen's words
        pieces.append(pre_tokenizers.Split(pattern, behavior="isolated"))
    pieces.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
    bpe.pre_tokenizer = pre_tokenizers.Sequence(pieces)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(SCORE_ADDED_TOKENS), special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=alphabet, show_progress=False)
    bpe.train_from_iterator(texts, trainer=trainer)
    bpe.add_tokens([AddedToken(t, special=False, normalized=False) for t in SCORE_ADDED_TOKENS])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=IM_END, pad_token=ENDOFTEXT,
                                        padding_side="left", model_max_length=32768,
                                        clean_up_tokenization_spaces=False)
    tokenizer.chat_template = CHAT_TEMPLATE
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def trajectory_corpus(trajectories: Sequence[dict[str, Any]]) -> list[str]:
    """`rrm_corpus` of coldstart trajectory rows (`load_trajectories`): their texts and user texts
    (one per distinct context)."""
    user_texts: dict[str, str] = {}
    for row in trajectories:
        if row["context_id"] not in user_texts:
            principles = [Principle(p["question"], p["category"]) for p in row["principles"]]
            user_texts[row["context_id"]] = render_user_text(row["instruction"], principles)
    return rrm_corpus([row["text"] for row in trajectories], user_texts.values())


def content_words(trajectories: Sequence[dict[str, Any]], min_count: int = 3, max_share: float = 0.3) -> list[str]:
    """The words a tiny RRM tokenizer keeps whole (see the module docstring), from coldstart rows:
    every word of the trajectories' first lines (the teacher's descriptions of the two images) seen
    at least ``min_count`` times, and the instructions' words found in at least ``min_count`` and at
    most ``max_share`` of the distinct instructions (colours, shapes, places, verbs); English
    function words ("the", "of", "on", ...) excluded."""
    described: Counter[str] = Counter()
    for row in trajectories:
        described.update(_WORD.findall(row["text"].strip().split("\n", 1)[0].lower()))
    instructions = {row["context_id"]: row["instruction"] for row in trajectories}
    in_instructions: Counter[str] = Counter()
    for text in instructions.values():
        in_instructions.update(set(_WORD.findall(text.lower())))
    limit = max_share * len(instructions)
    words = {w for w, c in described.items() if c >= min_count}
    words |= {w for w, c in in_instructions.items() if min_count <= c <= limit}
    return sorted(words - _FUNCTION_WORDS)
