"""The RRM prompt: system rules, user text and chat messages (DESIGN §4).

The same prompt is read by the tiny embedded RRM (a 2000-token BPE vocabulary) and by real
VLMs (Qwen2.5-VL, teachers behind an OpenAI-compatible endpoint), so it is short but
complete. Messages use the Hugging Face / Qwen2.5-VL chat format; image objects are passed
through untouched.

    >>> from editr1.rrm.principles import generic_principles
    >>> msgs = render_messages("make the circle blue", generic_principles("make the circle blue"))
    >>> [m["role"] for m in msgs]
    ['system', 'user']
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from editr1.rrm.principles import Principle

# Bump whenever SYSTEM_PROMPT or the user-text layout changes: it keys the teacher cache.
PROMPT_VERSION = "rrm-v1"

SYSTEM_PROMPT = (
    "You judge an image edit. You get a source image, an edited image, an instruction and "
    "numbered yes/no questions.\n"
    "1. Reason briefly: describe both images, then check each question in order.\n"
    '2. Write one JSON list, questions copied exactly: [{"question": "...", "score": 1}, ...] '
    "with score 1 for yes, 0 for no.\n"
    '3. Write {"average_score": x}, the mean of those scores.\n'
    "4. End with <score>s</score>: your overall rating s of the edit, from 0 (worst) to 10 (best)."
)


def render_user_text(instruction: str, principles: Sequence[Principle]) -> str:
    """The user text: the instruction, then the questions numbered from 1, one per line."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError("instruction must be a non-empty string")
    if not principles:
        raise ValueError("at least one principle is needed")
    for i, p in enumerate(principles):
        if not isinstance(p, Principle):
            raise TypeError(f"principle {i} must be a Principle, got {type(p).__name__}")
    lines = [f"Instruction: {instruction.strip()}", "Questions:"]
    lines += [f"{i}. {p.question}" for i, p in enumerate(principles, start=1)]
    return "\n".join(lines)


def render_messages(
    instruction: str,
    principles: Sequence[Principle],
    source_image: Any = None,
    edited_image: Any = None,
    *,
    system_prompt: str = SYSTEM_PROMPT,
) -> list[dict[str, Any]]:
    """Chat messages for one judgement, in the Hugging Face / Qwen2.5-VL format.

    Returns [system, user]; the user turn holds "Source image:", the source image,
    "Edited image:", the edited image, then `render_user_text(...)`. The images (PIL images
    or None) are placed in the messages as given, never copied or converted.
    """
    user_text = render_user_text(instruction, principles)
    return [
        {"role": "system", "content": [{"type": "text", "text": system_prompt}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Source image:"},
                {"type": "image", "image": source_image},
                {"type": "text", "text": "Edited image:"},
                {"type": "image", "image": edited_image},
                {"type": "text", "text": user_text},
            ],
        },
    ]


def prompt_hash(
    instruction: str,
    principles: Sequence[Principle],
    *,
    system_prompt: str = SYSTEM_PROMPT,
    extra: Sequence[str] = (),
) -> str:
    """A stable sha256 hex digest of (PROMPT_VERSION, system prompt, user text, extra).

    Keys the teacher-call cache. Images are not part of the text: callers put their content
    hashes (and anything else that changes the answer: model id, temperature) in `extra`.
    """
    if any(not isinstance(e, str) for e in extra):
        raise TypeError("extra must be a sequence of strings")
    payload = json.dumps(
        [PROMPT_VERSION, system_prompt, render_user_text(instruction, principles), list(extra)],
        ensure_ascii=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("ascii")).hexdigest()
