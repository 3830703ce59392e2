"""SFT's token loss mixed into GCPO's updates (`gcpo.sft_mix`), InstructGPT's PPO-ptx for the RRM.

    mix = SFTMix(rows, images, processor, batch_size=16, seed=0)
    loss = gcpo_loss + weight * mix.loss_fn(model, step)()

GCPO moves the score where the human pairs disagree with the teacher, and on the way it moves what the
SFT model had right (README: the other kinds fall while the teacher-wrong ones rise). Each GCPO step
also fits a batch of accepted cold-start trajectories (the SFT data) with the plain token
cross-entropy, so the update pays for a change in the judgements it was taught. The batch of step s
is drawn from (seed, s) alone: a resumed run draws the same batches and needs no state. With
``verdict_weight`` 0 the loss holds only the reading (the description and the check lines' findings)
and leaves the verdicts and the score, which carry the teacher's blind spots, to GCPO.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image

from editr1.models.processor import RRMProcessor
from editr1.training.data import encode_sft_batch, model_inputs, sft_examples
from editr1.training.losses import sft_token_loss


class SFTMix:
    """Batches of SFT examples by step and their token loss under a model."""

    def __init__(self, rows: Sequence[dict[str, Any]], images: Callable[[str], Image.Image],
                 processor: RRMProcessor, batch_size: int, seed: int, verdict_weight: float = 1.0) -> None:
        if not rows:
            raise ValueError("gcpo.sft_mix: no accepted train trajectories to mix in")
        if batch_size < 1:
            raise ValueError(f"gcpo.sft_mix_batch must be >= 1, got {batch_size}")
        if verdict_weight < 0:
            raise ValueError(f"gcpo.sft_mix_verdicts must be >= 0, got {verdict_weight}")
        self.rows = list(rows)
        self.images = images
        self.processor = processor
        self.batch_size = min(batch_size, len(self.rows))
        self.seed = seed
        self.verdict_weight = verdict_weight
        self.target_cache: dict = {}

    def indices(self, step: int) -> list[int]:
        """The trajectory rows of step `step`: a function of (seed, step) only."""
        return random.Random(f"sft-mix/{self.seed}/{step}").sample(range(len(self.rows)), self.batch_size)

    def batch(self, step: int):
        examples = sft_examples([self.rows[i] for i in self.indices(step)], self.images)
        return encode_sft_batch(self.processor, examples, verdict_weight=self.verdict_weight,
                                target_cache=self.target_cache)

    def loss_fn(self, model: torch.nn.Module, step: int) -> Callable[[], torch.Tensor]:
        """A closure of step `step`'s batch (encoded once) that gives its loss under `model` now."""
        batch = self.batch(step)
        device = next(model.parameters()).device

        def loss() -> torch.Tensor:
            logits = model(**model_inputs(batch, device)).logits
            weights = batch.get("loss_weights")
            return sft_token_loss(logits, batch["labels"].to(device), None if weights is None else weights.to(device))

        return loss
