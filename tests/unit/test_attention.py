"""Packed vision attention equals Qwen2.5-VL's per-image loop (values and gradients)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from editr1.models.attention import PACKED_VISION_ATTENTION, packed_vision_attention, use_packed_vision_attention


def per_image(query, key, value, lengths):
    outs = [F.scaled_dot_product_attention(q, k, v) for q, k, v in
            zip(*(t.split(lengths, dim=2) for t in (query, key, value)))]
    return torch.cat(outs, dim=2).transpose(1, 2)  # [1, S, H, D]


@pytest.mark.parametrize("lengths", [[16, 16, 16], [16, 4, 9, 16]])
def test_packed_equals_the_per_image_loop(lengths):
    torch.manual_seed(0)
    heads, dim, total = 2, 8, sum(lengths)
    q, k, v = (torch.randn(1, heads, total, dim, requires_grad=True) for _ in range(3))
    cu = torch.tensor([0] + lengths).cumsum(0)
    module = torch.nn.Module().eval()
    packed, _ = packed_vision_attention(module, q, k, v, cu_seq_lens_q=cu, scaling=dim**-0.5)
    loop = per_image(q, k, v, lengths)
    assert packed.shape == (1, total, heads, dim)
    torch.testing.assert_close(packed, loop)
    grads_packed = torch.autograd.grad(packed.pow(2).sum(), (q, k, v))
    grads_loop = torch.autograd.grad(loop.pow(2).sum(), (q, k, v))
    for a, b in zip(grads_packed, grads_loop):
        torch.testing.assert_close(a, b)


def test_a_tiny_qwen_vision_tower_gives_the_same_embeddings():
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1,
                         rope_parameters={"rope_type": "default", "rope_theta": 10.0, "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=2, hidden_size=16, num_heads=2, intermediate_size=32, out_hidden_size=32,
                           patch_size=7, spatial_merge_size=2, temporal_patch_size=2, fullatt_block_indexes=[1],
                           window_size=56),
    )
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    grid = torch.tensor([[1, 8, 8], [1, 4, 4], [1, 8, 8]])
    pixels = torch.randn(int(grid.prod(dim=1).sum()), 3 * 2 * 7 * 7)

    def embed():
        out = model.model.visual(pixels, grid_thw=grid)
        return out.pooler_output if hasattr(out, "pooler_output") else out

    with torch.no_grad():
        loop = embed()
        assert use_packed_vision_attention(model)
        assert model.config.vision_config._attn_implementation == PACKED_VISION_ATTENTION
        packed = embed()
    torch.testing.assert_close(packed, loop)
