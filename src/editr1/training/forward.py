"""The SFT forward passes that save work: the prompt's shared opening run once per batch, logits
only where a token is supervised, and scheduled sampling in one parallel forward
(`editr1.training.sft` uses them).

Every SFT example starts with the same tokens — the system prompt, then the user turn up to its first
image — about 48 of a judgement's ~265 tokens and 34 of a caption's ~100. In a causal decoder
their hidden states and keys/values are the same in every row, so `decoder_hidden` runs them once
(batch 1), hands their cache, broadcast to the batch, to the pass over the rest, and puts the
shared states back in front: the same states and, through the broadcast, the same gradients as one
pass over the whole batch (tests compare both), for ~24% fewer token passes per SFT step
(`bench/sft_prefix.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from transformers import BatchFeature, DynamicCache, Qwen2_5_VLForConditionalGeneration

from editr1.training.data import model_inputs
from editr1.training.losses import IGNORE_INDEX


def packed_target_logits(model: torch.nn.Module, batch: BatchFeature,
                         share_prefix: bool = True) -> tuple[Tensor, Tensor]:
    """Logits at the supervised positions only, packed for `sft_token_loss`.

    Runs the decoder over the whole batch but the LM head only where the next token has a label
    (a prompt is about half the tokens, and V-wide logits there are wasted). Returns
    (logits [1, N+1, V], labels [1, N+1]) with N supervised tokens: logits[0, i] predicts
    labels[0, i+1], labels[0, 0] = -100 and the last logit row unused, the layout `sft_token_loss`
    shifts — so the loss equals ``sft_token_loss(model(**batch).logits, batch["labels"])``.
    share_prefix: run the rows' shared opening once (`decoder_hidden`).
    """
    hidden, targets = packed_target_hidden(model, batch, share_prefix)
    logits = base_model(model).get_output_embeddings()(hidden)  # [N, V]
    packed = torch.cat([logits, logits.new_zeros(1, logits.shape[-1])])[None]
    packed_labels = torch.cat([targets.new_full((1,), IGNORE_INDEX), targets])[None]
    return packed, packed_labels


def packed_target_hidden(model: torch.nn.Module, batch: BatchFeature,
                         share_prefix: bool = True) -> tuple[Tensor, Tensor]:
    """The decoder's last hidden states where the next token has a label, and those labels:
    (hidden [N, H], targets [N]) in row-major order — the input of `linear_cross_entropy` with the
    LM head's weight, whose loss equals `packed_target_logits` + `sft_token_loss`."""
    device = next(model.parameters()).device
    labels = batch["labels"].to(device)
    hidden = decoder_hidden(model, batch, share_prefix)  # [B, L, H]
    predicts = labels[:, 1:] != IGNORE_INDEX  # hidden state t predicts token t + 1
    return hidden[:, :-1][predicts], labels[:, 1:][predicts]


def packed_loss_weights(batch: BatchFeature) -> Tensor | None:
    """The batch's ``loss_weights`` in the packed layout of `packed_target_logits` ([1, N+1]), or None."""
    if "loss_weights" not in batch:
        return None
    predicts = batch["labels"][:, 1:] != IGNORE_INDEX
    weights = batch["loss_weights"][:, 1:][predicts]
    return torch.cat([weights.new_zeros(1), weights])[None]


def shared_prefix_length(input_ids: Tensor, attention_mask: Tensor, mm_token_type_ids: Tensor | None = None) -> int:
    """How many leading positions hold the same token in every row of a right-padded batch, none of
    them padding or an image/video placeholder (whose features differ by row). ids, mask: [B, L]."""
    same = (input_ids == input_ids[:1]).all(dim=0) & attention_mask.bool().all(dim=0)  # [L]
    if mm_token_type_ids is not None:
        same &= (mm_token_type_ids == 0).all(dim=0)
    differs = torch.nonzero(~same)
    return int(differs[0, 0]) if differs.numel() else input_ids.shape[1]


# Below this many shared tokens the second pass costs more than the opening saves.
MIN_SHARED = 8


def decoder_hidden(model: torch.nn.Module, batch: BatchFeature, share_prefix: bool = True) -> Tensor:
    """The decoder's last hidden states [B, L, H] for an `encode_sft_batch` batch (right-padded).

    With ``share_prefix`` and rows that share an opening of at least `MIN_SHARED` tokens
    (`shared_prefix_length`), the opening is run once and its cache broadcast to the batch; the
    rest runs after it with the 3-D positions of the whole sequence. Same states, and gradients, as
    ``base.model(**model_inputs(batch))``.
    """
    base = base_model(model)
    device = next(model.parameters()).device
    inputs = model_inputs(batch, device)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    rows = ids.shape[0]
    shared = shared_prefix_length(ids, mask, inputs.get("mm_token_type_ids"))
    if not share_prefix or rows < 2 or shared < MIN_SHARED or shared >= ids.shape[1]:
        return base.model(**inputs, use_cache=False).last_hidden_state
    types = inputs.get("mm_token_type_ids")
    if types is None:
        types = torch.zeros_like(ids)
    positions, _ = base.model.get_rope_index(ids, image_grid_thw=inputs.get("image_grid_thw"), video_grid_thw=None,
                                             attention_mask=mask, mm_token_type_ids=types)  # [3, B, L]
    head = base.model.language_model(input_ids=ids[:1, :shared], attention_mask=mask[:1, :shared],
                                     position_ids=positions[:, :1, :shared], use_cache=True)
    cache = DynamicCache(ddp_cache_data=[(layer.keys.expand(rows, -1, -1, -1), layer.values.expand(rows, -1, -1, -1))
                                         for layer in head.cache.layers])
    rest = {k: (v[:, shared:] if k in ("input_ids", "mm_token_type_ids") else v) for k, v in inputs.items()}
    tail = base.model(**rest, position_ids=positions[:, :, shared:], cache=cache, use_cache=True).last_hidden_state
    return torch.cat([head.last_hidden_state.expand(rows, -1, -1), tail], dim=1)


@torch.no_grad()
def self_fed(model: torch.nn.Module, batch: BatchFeature, prob: float, generator: torch.Generator,
             banned: Sequence[int] = ()) -> BatchFeature:
    """Scheduled sampling, parallel form: ``batch`` with each ``self_feed_mask`` token replaced, with
    probability ``prob``, by a token sampled (temperature 1) from the model's prediction at that
    position given the teacher's tokens before it; ``labels`` and everything else unchanged. The
    ``banned`` ids (vision placeholders, special tokens) are never drawn. One no-grad forward;
    ``generator`` (CPU) draws both the positions and the tokens."""
    mask = batch["self_feed_mask"]
    pick = mask & (torch.rand(mask.shape, generator=generator) < prob)
    if not bool(pick.any()):
        return batch
    base = base_model(model)
    device = next(model.parameters()).device
    rows, cols = pick.nonzero(as_tuple=True)  # a target token: cols >= 1, and hidden state cols - 1 predicts it
    hidden = base.model(**model_inputs(batch, device), use_cache=False).last_hidden_state
    logits = base.get_output_embeddings()(hidden[rows.to(device), (cols - 1).to(device)]).float().cpu()
    if banned:
        logits[:, list(banned)] = float("-inf")
    drawn = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(1)
    input_ids = batch["input_ids"].clone()
    input_ids[rows, cols] = drawn.to(input_ids.dtype)
    return BatchFeature({**batch, "input_ids": input_ids})


def compile_decoder(model: torch.nn.Module) -> int:
    """Compile each decoder layer of ``model`` in place (``torch.compile``, dynamic shapes: batches
    and sequence lengths vary) and return how many. The weights, their names and the saved model
    are unchanged; the layers' elementwise work (norms, rotary, gates) runs as fused kernels. The
    first passes compile (tens of seconds on a CPU), later ones reuse the kernels."""
    layers = base_model(model).model.language_model.layers
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)


def base_model(model: torch.nn.Module) -> Qwen2_5_VLForConditionalGeneration:
    """The Qwen2.5-VL model under a peft wrapper (adapters stay injected), or the model itself."""
    if isinstance(model, Qwen2_5_VLForConditionalGeneration):
        return model
    return model.get_base_model()
