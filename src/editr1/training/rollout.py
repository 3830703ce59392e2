"""GCPO rollouts: N traces per side of each human pair from the current policy, their scores τ,
and the per-token log-probs PPO needs (DESIGN §6).

    from editr1.training.rollout import sample_rollout, token_logprobs, select_rows
    rollout = sample_rollout(model, processor, [(chosen_quad, rejected_quad), ...], n_samples=8,
                             temperature=1.0, max_new_tokens=400, readout="expected", seed=step)
    rollout.tau              # [P, 2, N]: side 0 = chosen, 1 = rejected; NaN = no score (the losses' NaN rule)
    rollout.logp_old         # [B, T] log-probs of the sampled tokens, B = 2 P N rows
    logp = token_logprobs(model, rollout.inputs, rollout.completion_ids, rollout.prompt_length,
                          rollout.temperature)[0]       # with grad, in the update

Rows are pair-major, then side, then sample: row (2p + s) N + j is sample j of side s of pair p
(the order `generate_ids` returns for the 2P prompts [p0 chosen, p0 rejected, p1 chosen, ...]).

One forward per rollout. After sampling, a single teacher-forced pass over prompt + completion
(no grad) gives both the old log-probs of every sampled token and, for the `expected` readout,
the logits right after the last generated `<score>` (`editr1.rrm.scoring` computes that readout
with a pass of its own; here the pass is shared). With β > 0 the frozen reference model runs the
same pass for its log-probs; with β = 0 it never runs.

Temperature. The policy that samples is softmax(logits / T), so every log-prob here (old, new,
reference) is taken at temperature T: at the first inner epoch the PPO ratio is exactly 1 and the
KL anchors the tempered policies. The `expected` readout uses the model's own logits (T = 1),
like `editr1.rrm.scoring`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import BatchFeature, Qwen2_5_VLForConditionalGeneration

from editr1.models.processor import RRMProcessor
from editr1.models.rrm import completion_batch, generate_ids
from editr1.models.tokenizer import SCORE_OPEN, single_token_id
from editr1.rrm.items import Quadruple
from editr1.rrm.parser import parse_output
from editr1.rrm.scoring import encode_quadruples, expected_from_logits, last_token_positions, score_vocabulary

READOUTS = ("expected", "parsed")
INPUT_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw")


@dataclass
class Rollout:
    """The sampled traces of P pairs, 2N rows per pair (see the module docstring for the row order).

    inputs: teacher-forced model inputs, prompt (left-padded, length prompt_length) + completion;
    completion_ids, completion_mask: [B, T] (mask: float 0/1, 1 up to and including the stop token);
    logp_old: [B, T] sampled tokens' log-probs under the sampling policy at `temperature` (0 off-mask);
    logp_ref: [B, T] under the reference, or None when no reference ran;
    tau: [P, 2, N] float32, the readout of each trace, NaN where it has none;
    parsed_ok: [B] bool, the strict parser found a score; texts: the B completions.
    """

    inputs: dict[str, Tensor]
    prompt_length: int
    completion_ids: Tensor
    completion_mask: Tensor
    logp_old: Tensor
    logp_ref: Tensor | None
    tau: Tensor
    parsed_ok: Tensor
    texts: list[str]
    n_samples: int
    temperature: float

    @property
    def n_pairs(self) -> int:
        return self.tau.shape[0]

    @property
    def lengths(self) -> Tensor:
        """[B] completion length of each trace, in tokens (stop token included)."""
        return self.completion_mask.sum(dim=1)


def token_logprobs(model: Qwen2_5_VLForConditionalGeneration, inputs: dict[str, Tensor], completion_ids: Tensor,
                   prompt_length: int, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """Log-probs of the completion tokens under `model` at `temperature`, by one forward.

    inputs: prompt + completion (`completion_batch` layout, rows B, length prompt_length + T);
    completion_ids: [B, T]. Returns (logp [B, T], logits [B, T + 1, V]) where logits[:, t] is the
    model's own (untempered) next-token logits after completion token t - 1 (t = 0: after the
    prompt), so logits[:, T] follows the last token (a truncated output ending in `<score>`).
    Gradients flow when called outside no_grad. logp is float32.
    """
    if temperature <= 0:
        raise ValueError(f"log-probs need temperature > 0, got {temperature}")
    batch, length = completion_ids.shape
    if inputs["input_ids"].shape != (batch, prompt_length + length):
        raise ValueError(f"inputs of shape {tuple(inputs['input_ids'].shape)} do not hold prompt "
                         f"{prompt_length} + completion {length} for {batch} rows")
    hidden = model.model(**inputs, use_cache=False).last_hidden_state
    # Position P-1+t predicts completion token t; the LM head runs on the completion positions only.
    logits = model.get_output_embeddings()(hidden[:, prompt_length - 1 :])
    scaled = logits[:, :length].float()
    if temperature != 1.0:
        scaled = scaled / temperature
    picked = scaled.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(scaled, dim=-1), logits


def _images_per_row(inputs: dict[str, Tensor], image_token_id: int, merge_size: int) -> list[list[int]]:
    """For each row, the indices of its images in `image_grid_thw` order."""
    grid = inputs["image_grid_thw"]
    tokens_per_image = (grid.prod(dim=1) // merge_size**2).tolist()
    tokens_per_row = (inputs["input_ids"] == image_token_id).sum(dim=1).tolist()
    out, image = [], 0
    for need in tokens_per_row:
        mine = []
        while need > 0:
            need -= tokens_per_image[image]
            mine.append(image)
            image += 1
        if need != 0:
            raise ValueError("image tokens of a row do not match whole images")
        out.append(mine)
    return out


def select_rows(processor: RRMProcessor, rollout: Rollout, rows: Sequence[int]) -> Rollout:
    """The sub-rollout of `rows` (their image patches with them), trailing padding cut.

    tau keeps all pairs (it is per pair, not per row); use it from the full rollout.
    """
    rows_t = torch.as_tensor(list(rows), dtype=torch.long)
    if rows_t.numel() == 0:
        raise ValueError("no rows selected")
    length = int(rollout.completion_mask[rows_t].sum(dim=1).max())
    end = rollout.prompt_length + length
    inputs = {k: rollout.inputs[k][rows_t, :end] for k in ("input_ids", "attention_mask", "mm_token_type_ids")}
    if "pixel_values" in rollout.inputs:
        grid = rollout.inputs["image_grid_thw"]
        owners = _images_per_row(rollout.inputs, processor.image_token_id, processor.image_processor.merge_size)
        patches = rollout.inputs["pixel_values"].split(grid.prod(dim=1).tolist())
        images = [i for r in rows_t.tolist() for i in owners[r]]
        inputs["pixel_values"] = torch.cat([patches[i] for i in images])
        inputs["image_grid_thw"] = grid[images]
    return Rollout(
        inputs=inputs, prompt_length=rollout.prompt_length,
        completion_ids=rollout.completion_ids[rows_t, :length], completion_mask=rollout.completion_mask[rows_t, :length],
        logp_old=rollout.logp_old[rows_t, :length],
        logp_ref=None if rollout.logp_ref is None else rollout.logp_ref[rows_t, :length],
        tau=rollout.tau, parsed_ok=rollout.parsed_ok[rows_t], texts=[rollout.texts[r] for r in rows_t.tolist()],
        n_samples=rollout.n_samples, temperature=rollout.temperature,
    )


@torch.no_grad()
def sample_rollout(
    model: Qwen2_5_VLForConditionalGeneration,
    processor: RRMProcessor,
    pairs: Sequence[tuple[Quadruple, Quadruple]],
    *,
    n_samples: int,
    temperature: float,
    max_new_tokens: int,
    readout: str,
    seed: int,
    reference: Qwen2_5_VLForConditionalGeneration | None = None,
) -> Rollout:
    """Sample `n_samples` traces on the chosen and on the rejected quadruple of each pair.

    pairs: (chosen, rejected) quadruples of non-tie human pairs (ties carry no GCPO signal and are
    excluded before, DESIGN §6). Sampling is seeded by `seed` and leaves the global RNG alone.
    readout: "parsed" (the strict parser's `<score>` number) or "expected" (the probability-weighted
    mean over the score tokens right after the last generated `<score>`); a trace without one gets
    NaN. reference: the frozen SFT model, for logp_ref (pass None when β = 0).
    The caller puts the models in eval mode (no dropout during RL: ratios must start at 1).
    """
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    if not pairs:
        raise ValueError("no pairs to roll out")
    if n_samples < 1 or temperature <= 0:
        raise ValueError(f"need n_samples >= 1 and temperature > 0, got {n_samples} and {temperature}")
    quads = [q for pair in pairs for q in pair]
    prompts = encode_quadruples(processor, quads)
    generation = generate_ids(model, processor, prompts, max_new_tokens, temperature, n_samples, seed)
    inputs = {k: v.to(model.device) for k, v in completion_batch(processor, prompts, generation).items()
              if k in INPUT_KEYS}
    completion_ids = generation.completion_ids.to(model.device)
    mask = generation.completion_mask.to(model.device, torch.float32)
    prompt_length = prompts["input_ids"].shape[1]

    logp, logits = token_logprobs(model, inputs, completion_ids, prompt_length, temperature)
    logp_old = logp * mask
    logp_ref = None
    if reference is not None:
        logp_ref = token_logprobs(reference, inputs, completion_ids, prompt_length, temperature)[0] * mask

    judgements = [parse_output(text) for text in generation.texts]
    parsed_ok = torch.tensor([j.parse_ok for j in judgements], dtype=torch.bool)
    if readout == "parsed":
        tau = torch.tensor([j.score if j.parse_ok else math.nan for j in judgements], dtype=torch.float32)
    else:
        tau = expected_readout(processor, logits, completion_ids, mask)
    return Rollout(
        inputs=inputs, prompt_length=prompt_length, completion_ids=completion_ids, completion_mask=mask,
        logp_old=logp_old, logp_ref=logp_ref, tau=tau.view(len(pairs), 2, n_samples),
        parsed_ok=parsed_ok, texts=generation.texts, n_samples=n_samples, temperature=temperature,
    )


def expected_readout(processor: RRMProcessor, logits: Tensor, completion_ids: Tensor, mask: Tensor) -> Tensor:
    """[B] expected score after the last generated `<score>` of each row, NaN where there is none.

    logits: [B, T + 1, V] from `token_logprobs` (logits[:, t + 1] follows completion token t, so an
    output truncated right after `<score>` still gets its distribution from logits[:, T]).
    """
    tokenizer = processor.tokenizer
    open_id = single_token_id(tokenizer, SCORE_OPEN)
    score_ids, values = score_vocabulary(tokenizer)
    steps = last_token_positions(completion_ids, mask, open_id)
    tau = torch.full((completion_ids.shape[0],), math.nan, dtype=torch.float32)
    rows = torch.nonzero(steps >= 0).flatten()
    if rows.numel():
        at = logits[rows, steps[rows] + 1]
        tau[rows.cpu()] = expected_from_logits(at, score_ids, values).cpu()
    return tau


def batch_inputs(batch: BatchFeature, device: torch.device | str) -> dict[str, Tensor]:
    """The model's forward keyword arguments of an `encode_batch`-style batch, on `device`."""
    return {k: batch[k].to(device) for k in INPUT_KEYS if k in batch}
