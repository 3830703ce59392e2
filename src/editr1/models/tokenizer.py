"""Offline byte-level BPE tokenizer with Qwen2.5-VL special tokens and chat template.

The tiny RRM cannot download Qwen's tokenizer, so we train one on local text::

    from editr1.models.tokenizer import train_tokenizer, score_token_ids
    tok = train_tokenizer(corpus_lines, vocab_size=2000, out_dir=Path("runs/tok"))
    tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    score_ids = score_token_ids(tok)  # ids of "0".."10", one token each

The result is a `PreTrainedTokenizerFast` saved in ``out_dir`` (reload it with
`PreTrainedTokenizerFast.from_pretrained(out_dir)`) that behaves like Qwen2.5-VL's:
the same special tokens, the same chat template, pad ``<|endoftext|>``, eos ``<|im_end|>``,
left padding. Digits are split one per token (as in Qwen), ``"10"``, ``"<score>"`` and
``"</score>"`` are added tokens, so the token right after ``<score>`` is the whole score and an
expected-score readout over the 11 score tokens is exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD]
# Tokens the model must never generate: an image placeholder without pixels breaks the next forward.
VISION_TOKENS = [VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD]

SCORE_OPEN = "<score>"
SCORE_CLOSE = "</score>"
MAX_SCORE = 10
# Non-special added tokens: they survive `skip_special_tokens=True` when decoding.
SCORE_ADDED_TOKENS = [SCORE_OPEN, SCORE_CLOSE, str(MAX_SCORE)]

# Qwen2.5-VL-Instruct's template, so the tiny model and a hub model render prompts identically.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: Path) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and save a Qwen-style fast tokenizer in ``out_dir``.

    ``len(tokenizer) <= vocab_size`` (special and added tokens included); it is smaller when
    the corpus has too few distinct pairs to fill the vocabulary.
    """
    n_reserved = len(SPECIAL_TOKENS) + len(SCORE_ADDED_TOKENS)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < n_reserved + len(alphabet):
        raise ValueError(f"vocab_size {vocab_size} < {n_reserved + len(alphabet)} (bytes + special tokens)")

    bpe = Tokenizer(models.BPE())
    # Digits one per token (as Qwen does), so a score digit is never merged with its neighbours.
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        # The trainer counts special tokens in its budget; the 3 score tokens are added after.
        vocab_size=vocab_size - len(SCORE_ADDED_TOKENS),
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    bpe.add_tokens([AddedToken(t, special=False, normalized=False) for t in SCORE_ADDED_TOKENS])

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        padding_side="left",
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def single_token_id(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    """Id of ``text`` if it encodes to exactly one token, else a ValueError."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{text!r} is not a single token: {ids}")
    return ids[0]


def score_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids of the scores "0", "1", ..., "10" (index = score value).

    Raises ValueError if a score is not a single token (the expected-score readout needs it).
    """
    return [single_token_id(tokenizer, str(v)) for v in range(MAX_SCORE + 1)]


def vision_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids of the vision placeholder tokens that generation must suppress."""
    return tokenizer.convert_tokens_to_ids(VISION_TOKENS)
