"""The RRM's model pieces: tokenizer, processor, Qwen2.5-VL model, generation.

    from editr1.models import tiny_rrm, encode_batch, generate, save_rrm, load_rrm, score_token_ids
"""

from editr1.models.processor import (
    RRMProcessor,
    build_processor,
    encode_batch,
    load_processor,
    render_chat,
    save_processor,
)
from editr1.models.rrm import (
    Generation,
    TinyRRMSpec,
    add_score_tokens,
    build_tiny_rrm,
    completion_batch,
    generate,
    generate_ids,
    load_rrm,
    repeat_batch,
    rrm_config,
    save_rrm,
    tiny_rrm,
)
from editr1.models.tokenizer import (
    CHAT_TEMPLATE,
    SCORE_CLOSE,
    SCORE_OPEN,
    SPECIAL_TOKENS,
    VISION_TOKENS,
    score_token_ids,
    single_token_id,
    train_tokenizer,
    vision_token_ids,
)

__all__ = [
    "CHAT_TEMPLATE",
    "SCORE_CLOSE",
    "SCORE_OPEN",
    "SPECIAL_TOKENS",
    "VISION_TOKENS",
    "Generation",
    "RRMProcessor",
    "TinyRRMSpec",
    "add_score_tokens",
    "build_processor",
    "build_tiny_rrm",
    "completion_batch",
    "encode_batch",
    "generate",
    "generate_ids",
    "load_processor",
    "load_rrm",
    "render_chat",
    "repeat_batch",
    "rrm_config",
    "save_processor",
    "save_rrm",
    "score_token_ids",
    "single_token_id",
    "tiny_rrm",
    "train_tokenizer",
    "vision_token_ids",
]
