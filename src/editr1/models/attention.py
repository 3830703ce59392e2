"""Packed attention for the RRM's vision tower: all images of a batch in one SDPA call.

Qwen2.5-VL's vision tower concatenates the patches of every image into one sequence and, unless a
flash-attention implementation is configured, runs attention image by image in a Python loop (one
call per image and layer: 64 calls per layer for a batch of 32 pairs). `packed_vision_attention`
does the same attention in one call: images of equal size are stacked as a batch, images of mixed
sizes share one call under a block-diagonal mask. The result equals the loop's (tests check it).

    from editr1.models.attention import use_packed_vision_attention
    use_packed_vision_attention(model)        # model: Qwen2_5_VLForConditionalGeneration

Transformers routes variable-length (``cu_seqlens``) attention only to implementations whose name
contains "flash", hence the registered name. It is used on CPU, where no flash kernel exists; a
model already configured with a real flash implementation keeps it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import AttentionInterface

PACKED_VISION_ATTENTION = "sdpa_packed_flash_varlen"


def packed_vision_attention(
    module: torch.nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None = None,
    scaling: float | None = None,
    dropout: float = 0.0,
    cu_seq_lens_q: Tensor | None = None,
    **kwargs,
) -> tuple[Tensor, None]:
    """Bidirectional attention within each image of a packed sequence.

    query, key, value: [1, H, S, D] with S the patches of all images in order; ``cu_seq_lens_q``:
    [n + 1] cumulative patch counts. Returns ([1, S, H, D], None), the layout of the
    transformers attention interfaces.
    """
    if query.shape[0] != 1 or cu_seq_lens_q is None:
        raise ValueError("packed vision attention takes one packed sequence and its cu_seqlens")
    _, heads, total, dim = query.shape
    lengths = cu_seq_lens_q[1:] - cu_seq_lens_q[:-1]
    n, first = lengths.numel(), int(lengths[0])
    p = dropout if module.training else 0.0
    if bool((lengths == first).all()):
        q, k, v = (t[0].view(heads, n, first, dim).transpose(0, 1) for t in (query, key, value))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, scale=scaling)  # [n, H, L, D]
        return out.permute(0, 2, 1, 3).reshape(1, total, heads, dim), None
    image = torch.repeat_interleave(torch.arange(n, device=query.device), lengths.to(query.device))
    mask = image[:, None] == image[None, :]
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=p, scale=scaling)
    return out.transpose(1, 2), None


AttentionInterface.register(PACKED_VISION_ATTENTION, packed_vision_attention)


def use_packed_vision_attention(model: torch.nn.Module) -> bool:
    """Switch ``model``'s vision tower to `packed_vision_attention` unless it already uses a flash
    implementation; returns whether it switched."""
    vision = getattr(model.config, "vision_config", None)
    if vision is None or "flash" in str(getattr(vision, "_attn_implementation", "") or ""):
        return False
    model.set_attn_implementation({"vision_config": PACKED_VISION_ATTENTION})
    return True
