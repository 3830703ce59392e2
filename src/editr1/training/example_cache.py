"""SFT examples encoded once: tokens, labels and the frozen vision tower's image features, kept.

    cache = EncodedExamples(processor, examples, frozen_visual_model, verdict_weight=5.0)
    batch = cache.batch([17, 3, 250])   # the batch encode_sft_batch makes of those examples, with
    hidden = model.model(**model_inputs(batch)).last_hidden_state     # image features, no pixels

An SFT step used to encode its examples again every time they came round: the chat prompt rendered
and tokenised, the images resized and cut into patches, and then the vision tower run on them —
a tower that `sft.freeze_vision` keeps fixed for the whole run. With a frozen tower none of that can
change, so `EncodedExamples` encodes each example once and keeps its rows (input ids, token types,
labels, loss weights) and its images' features; a batch is then only padding and stacking, and the
decoder receives the features through Qwen2.5-VL's ``mm_encoder_outputs`` instead of pixels
(`editr1.training.data.model_inputs`). `bench/sft_cache.py` measures the step it saves.

Examples are encoded in fixed chunks (``chunk`` consecutive examples of the list, the first time one
of them is asked for), so the features of an example are the same numbers whichever batch asks
first — a resumed run reads exactly what the uninterrupted one read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import BatchFeature

from editr1.models.processor import RRMProcessor
from editr1.models.tokenizer import ENDOFTEXT
from editr1.training.data import SFTExample, encode_sft_batch
from editr1.training.forward import base_model
from editr1.training.losses import IGNORE_INDEX

# Per-token rows of an encoded example and the value that pads each one.
_ROW_PADDING = {"input_ids": None, "attention_mask": 0, "mm_token_type_ids": 0, "labels": IGNORE_INDEX,
                "loss_weights": 0.0, "self_feed_mask": False}


@dataclass(frozen=True)
class EncodedExample:
    """One example's unpadded rows (by `encode_sft_batch` key), its images' grids [n_images, 3]
    and their features from the vision tower [n_image_tokens, hidden]."""

    rows: dict[str, Tensor]
    image_grid_thw: Tensor
    image_features: Tensor


def image_features(model: torch.nn.Module, batch: BatchFeature) -> Tensor:
    """The vision tower's output for ``batch``'s images, concatenated in image order
    [n_image_tokens, hidden]: what the decoder's image tokens receive. No gradient."""
    base = base_model(model)
    device = next(base.parameters()).device
    with torch.no_grad():
        out = base.model.get_image_features(batch["pixel_values"].to(device), batch["image_grid_thw"].to(device))
    return torch.cat(list(out.pooler_output))


class EncodedExamples:
    """Batches of ``examples`` by index, each example encoded by `encode_sft_batch` (with
    ``encode_kwargs``) and run through ``model``'s vision tower once, ``chunk`` examples at a time.

    Only valid while the tower's weights do not change: the trainer uses it when the tower is frozen
    for the whole run.
    """

    def __init__(self, processor: RRMProcessor, examples: Sequence[SFTExample], model: torch.nn.Module,
                 chunk: int = 64, **encode_kwargs) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.processor = processor
        self.examples = examples
        self.model = model
        self.chunk = chunk
        self.encode_kwargs = encode_kwargs
        self._encoded: dict[int, EncodedExample] = {}
        self._pad_id = processor.tokenizer.convert_tokens_to_ids(ENDOFTEXT)
        self._merge = int(getattr(processor.image_processor, "merge_size", 2)) ** 2

    def __len__(self) -> int:
        return len(self._encoded)

    def _encode_chunk(self, first: int) -> None:
        indices = range(first, min(first + self.chunk, len(self.examples)))
        batch = encode_sft_batch(self.processor, [self.examples[i] for i in indices], **self.encode_kwargs)
        features = image_features(self.model, batch).cpu()  # kept in host memory, moved per batch
        grids = batch["image_grid_thw"].view(len(indices), 2, 3)  # encode_sft_batch: source, edited per example
        tokens = (grids.prod(dim=2) // self._merge).sum(dim=1).tolist()  # image tokens per example
        start = 0
        for j, i in enumerate(indices):
            length = int(batch["attention_mask"][j].sum())
            rows = {k: batch[k][j, :length].clone() for k in _ROW_PADDING if k in batch}
            self._encoded[i] = EncodedExample(rows, grids[j].clone(), features[start:start + tokens[j]].clone())
            start += tokens[j]

    def example(self, index: int) -> EncodedExample:
        """The encoded example ``index`` (its chunk is encoded on first use)."""
        if not 0 <= index < len(self.examples):
            raise IndexError(f"example {index} of {len(self.examples)}")
        if index not in self._encoded:
            self._encode_chunk(index - index % self.chunk)
        return self._encoded[index]

    def batch(self, indices: Sequence[int]) -> BatchFeature:
        """Right-padded batch of the examples ``indices``, as `encode_sft_batch` pads it, with
        ``image_features`` [n_image_tokens, hidden] in place of ``pixel_values``."""
        if not indices:
            raise ValueError("no examples to batch")
        encoded = [self.example(i) for i in indices]
        length = max(len(e.rows["input_ids"]) for e in encoded)
        out = {}
        for key, pad in _ROW_PADDING.items():
            if key not in encoded[0].rows:
                continue
            first = encoded[0].rows[key]
            value = self._pad_id if pad is None else pad
            padded = torch.full((len(encoded), length), value, dtype=first.dtype)
            for j, e in enumerate(encoded):
                padded[j, :len(e.rows[key])] = e.rows[key]
            out[key] = padded
        out["image_grid_thw"] = torch.cat([e.image_grid_thw for e in encoded])
        out["image_features"] = torch.cat([e.image_features for e in encoded])
        return BatchFeature(out)
