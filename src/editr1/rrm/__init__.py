"""The reasoning reward model's text side: principles, prompt, output parsing (DESIGN §4)."""

from editr1.rrm.parser import (
    PRINCIPLES_ERRORS,
    SCORE_CLOSES,
    SCORE_ERRORS,
    SCORE_OPEN,
    Judgement,
    format_score,
    parse_output,
    render_output,
    reward,
    score_token_strings,
)
from editr1.rrm.principles import (
    CATEGORIES,
    DEFAULT_BOUNDS,
    Category,
    Principle,
    generic_principles,
    parse_principles_json,
    validate_principles,
)
from editr1.rrm.prompt import (
    PROMPT_VERSION,
    SYSTEM_PROMPT,
    prompt_hash,
    render_messages,
    render_user_text,
)

__all__ = [
    "CATEGORIES",
    "DEFAULT_BOUNDS",
    "PRINCIPLES_ERRORS",
    "PROMPT_VERSION",
    "SCORE_CLOSES",
    "SCORE_ERRORS",
    "SCORE_OPEN",
    "SYSTEM_PROMPT",
    "Category",
    "Judgement",
    "Principle",
    "format_score",
    "generic_principles",
    "parse_output",
    "parse_principles_json",
    "prompt_hash",
    "render_messages",
    "render_output",
    "render_user_text",
    "reward",
    "score_token_strings",
    "validate_principles",
]
