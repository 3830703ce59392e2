"""The SFT forward passes that save work: logits only where a token is supervised, and scheduled
sampling in one parallel forward (`editr1.training.sft` uses both)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from transformers import BatchFeature, Qwen2_5_VLForConditionalGeneration

from editr1.training.data import model_inputs
from editr1.training.losses import IGNORE_INDEX


def packed_target_logits(model: torch.nn.Module, batch: BatchFeature) -> tuple[Tensor, Tensor]:
    """Logits at the supervised positions only, packed for `sft_token_loss`.

    Runs the decoder over the whole batch but the LM head only where the next token has a label
    (a prompt is about half the tokens, and V-wide logits there are wasted). Returns
    (logits [1, N+1, V], labels [1, N+1]) with N supervised tokens: logits[0, i] predicts
    labels[0, i+1], labels[0, 0] = -100 and the last logit row unused, the layout `sft_token_loss`
    shifts — so the loss equals ``sft_token_loss(model(**batch).logits, batch["labels"])``.
    """
    device = next(model.parameters()).device
    labels = batch["labels"].to(device)
    base = base_model(model)
    hidden = base.model(**model_inputs(batch, device), use_cache=False).last_hidden_state  # [B, L, H]
    predicts = labels[:, 1:] != IGNORE_INDEX  # hidden state t predicts token t + 1
    logits = base.get_output_embeddings()(hidden[:, :-1][predicts])  # [N, V]
    packed = torch.cat([logits, logits.new_zeros(1, logits.shape[-1])])[None]
    packed_labels = torch.cat([labels.new_full((1,), IGNORE_INDEX), labels[:, 1:][predicts]])[None]
    return packed, packed_labels


def packed_loss_weights(batch: BatchFeature) -> Tensor | None:
    """The batch's ``loss_weights`` in the packed layout of `packed_target_logits` ([1, N+1]), or None."""
    if "loss_weights" not in batch:
        return None
    predicts = batch["labels"][:, 1:] != IGNORE_INDEX
    weights = batch["loss_weights"][:, 1:][predicts]
    return torch.cat([weights.new_zeros(1), weights])[None]


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


def base_model(model: torch.nn.Module) -> Qwen2_5_VLForConditionalGeneration:
    """The Qwen2.5-VL model under a peft wrapper (adapters stay injected), or the model itself."""
    if isinstance(model, Qwen2_5_VLForConditionalGeneration):
        return model
    return model.get_base_model()
