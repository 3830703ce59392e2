"""GCPO rollouts: N traces per side of each human pair from the current policy, their scores τ and
their per-token log-probs (DESIGN §6).

    from editr1.training.rollout import sample_rollout, score_traces, token_logprobs, select_rows
    rollout = sample_rollout(model, processor, [(chosen_quad, rejected_quad), ...], n_samples=8,
                             temperature=1.0, max_new_tokens=512, seed=step, reference=None)
    scored = score_traces(model, processor, rollout, readout="expected")   # ONE forward, grad on
    scored.tau          # [P, 2, N]: side 0 = chosen, 1 = rejected; NaN = no score (the losses' NaN rule)
    logp_old = scored.logp.detach()                                          # [B, T], B = 2 P N
    loss = gcpo_loss(scored.logp, logp_old, rollout.logp_ref, ...)           # the first PPO epoch
    logp = token_logprobs(model, sub.inputs, sub.completion_ids, sub.prompt_length, T)[0]  # later epochs

Rows are pair-major, then side, then sample: row (2p + s) N + j is sample j of side s of pair p
(the order `generate_ids` returns for the 2P prompts [p0 chosen, p0 rejected, p1 chosen, ...]).

No redundant forward. Sampling (`generate_ids`, KV cache, no grad) returns tokens only. The one
teacher-forced pass over prompt + completion that `score_traces` runs gives, together, the
log-prob of every sampled token and the logits right after the last generated `<score>` (the
`expected` readout; `editr1.rrm.scoring` runs a pass of its own for it). Run with grad, that same
pass is the first PPO epoch's forward: nothing has been updated since sampling, so its detached
log-probs ARE the old log-probs (the ratio is exactly 1 at the first epoch) — the separate no-grad
"old log-prob" pass most trainers run would compute the same numbers again. With β > 0 the
frozen reference model runs one pass for its log-probs (`sample_rollout(reference=...)`); with
β = 0 it never runs.

Temperature. The policy that samples is softmax(logits / T), so every log-prob here (old, new,
reference) is taken at temperature T and the KL anchors the tempered policies. The `expected`
readout uses the model's own logits (T = 1), like `editr1.rrm.scoring`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import Qwen2_5_VLForConditionalGeneration

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
    parsed: [B] float32, the strict parser's score, NaN where the output does not parse;
    logp_ref: [B, T] sampled tokens' log-probs under the reference at `temperature`, 0 off the
    mask, or None when no reference ran; texts: the B completions.
    """

    inputs: dict[str, Tensor]
    prompt_length: int
    completion_ids: Tensor
    completion_mask: Tensor
    parsed: Tensor
    logp_ref: Tensor | None
    texts: list[str]
    n_pairs: int
    n_samples: int
    temperature: float

    @property
    def parsed_ok(self) -> Tensor:
        """[B] bool: the output parsed."""
        return ~self.parsed.isnan()

    @property
    def lengths(self) -> Tensor:
        """[B] completion length of each trace in tokens (stop token included)."""
        return self.completion_mask.sum(dim=1)


@dataclass
class ScoredTraces:
    """What one forward over a rollout gives: logp [B, T] of the sampled tokens at the rollout's
    temperature (0 off the mask; with grad when run with grad) and tau [P, 2, N] (float32, no grad,
    NaN = no score) of the chosen readout."""

    logp: Tensor
    tau: Tensor


def token_logprobs(model: Qwen2_5_VLForConditionalGeneration, inputs: dict[str, Tensor], completion_ids: Tensor,
                   prompt_length: int, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """Log-probs of the completion tokens under `model` at `temperature`, by one forward.

    inputs: prompt + completion (`completion_batch` layout, B rows, length prompt_length + T);
    completion_ids: [B, T]. Returns (logp [B, T] float32, logits [B, T + 1, V]) where
    logits[:, t] are the model's own (untempered) next-token logits after completion token t - 1
    (t = 0: after the prompt), so logits[:, T] follows the last token. The LM head runs on the
    completion positions only. Gradients flow when called outside no_grad.
    """
    if temperature <= 0:
        raise ValueError(f"log-probs need temperature > 0, got {temperature}")
    batch, length = completion_ids.shape
    if tuple(inputs["input_ids"].shape) != (batch, prompt_length + length):
        raise ValueError(f"inputs of shape {tuple(inputs['input_ids'].shape)} do not hold prompt "
                         f"{prompt_length} + completion {length} for {batch} rows")
    hidden = model.model(**inputs, use_cache=False).last_hidden_state
    logits = model.get_output_embeddings()(hidden[:, prompt_length - 1 :])  # position P-1+t predicts token t
    scaled = logits[:, :length].float()
    if temperature != 1.0:
        scaled = scaled / temperature
    picked = scaled.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(scaled, dim=-1), logits


def expected_readout(processor: RRMProcessor, logits: Tensor, completion_ids: Tensor, mask: Tensor) -> Tensor:
    """[B] expected score after the last generated `<score>` of each row, NaN where there is none.

    logits: [B, T + 1, V] from `token_logprobs` (logits[:, t + 1] follows completion token t, so an
    output truncated right after `<score>` still gets its distribution, from logits[:, T]).
    Computed without grad (τ is a reward, not a differentiable quantity in GCPO).
    """
    tokenizer = processor.tokenizer
    open_id = single_token_id(tokenizer, SCORE_OPEN)
    score_ids, values = score_vocabulary(tokenizer)
    steps = last_token_positions(completion_ids, mask, open_id)
    tau = torch.full((completion_ids.shape[0],), math.nan, dtype=torch.float32)
    rows = torch.nonzero(steps >= 0).flatten()
    if rows.numel():
        with torch.no_grad():
            at = logits[rows, steps[rows] + 1].detach()
            tau[rows.cpu()] = expected_from_logits(at, score_ids, values).cpu()
    return tau


def score_traces(model: Qwen2_5_VLForConditionalGeneration, processor: RRMProcessor, rollout: Rollout,
                 readout: str) -> ScoredTraces:
    """Log-probs of every sampled token and τ of every trace, from one forward (see module docstring).

    readout: "expected" (from this forward's logits) or "parsed" (the parser's score, no logits needed).
    """
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    logp, logits = token_logprobs(model, rollout.inputs, rollout.completion_ids, rollout.prompt_length,
                                  rollout.temperature)
    if readout == "expected":
        tau = expected_readout(processor, logits, rollout.completion_ids, rollout.completion_mask)
    else:
        tau = rollout.parsed.clone()
    return ScoredTraces(logp * rollout.completion_mask, tau.view(rollout.n_pairs, 2, rollout.n_samples))


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
            raise ValueError("the image tokens of a row do not add up to whole images")
        out.append(mine)
    return out


def select_rows(processor: RRMProcessor, rollout: Rollout, rows: Sequence[int]) -> Rollout:
    """The rollout restricted to `rows` (their image patches with them), trailing padding cut.

    The result's n_pairs / n_samples describe the parent rollout (τ grouping belongs to it).
    """
    rows_t = torch.as_tensor(list(rows), dtype=torch.long)
    if rows_t.numel() == 0:
        raise ValueError("no rows selected")
    length = int(rollout.completion_mask[rows_t].sum(dim=1).max())
    end = rollout.prompt_length + length
    inputs = {k: rollout.inputs[k][rows_t.to(rollout.inputs[k].device), :end]
              for k in ("input_ids", "attention_mask", "mm_token_type_ids")}
    if "pixel_values" in rollout.inputs:
        grid = rollout.inputs["image_grid_thw"]
        owners = _images_per_row(rollout.inputs, processor.image_token_id, processor.image_processor.merge_size)
        patches = rollout.inputs["pixel_values"].split(grid.prod(dim=1).tolist())
        images = [i for r in rows_t.tolist() for i in owners[r]]
        inputs["pixel_values"] = torch.cat([patches[i] for i in images])
        inputs["image_grid_thw"] = grid[images]
    on = rollout.completion_ids.device
    return Rollout(
        inputs=inputs, prompt_length=rollout.prompt_length,
        completion_ids=rollout.completion_ids[rows_t.to(on), :length],
        completion_mask=rollout.completion_mask[rows_t.to(on), :length],
        parsed=rollout.parsed[rows_t],
        logp_ref=None if rollout.logp_ref is None else rollout.logp_ref[rows_t.to(on), :length],
        texts=[rollout.texts[r] for r in rows_t.tolist()],
        n_pairs=rollout.n_pairs, n_samples=rollout.n_samples, temperature=rollout.temperature,
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
    seed: int,
    reference: Qwen2_5_VLForConditionalGeneration | None = None,
) -> Rollout:
    """Sample `n_samples` traces on the chosen and on the rejected quadruple of each pair.

    pairs: (chosen, rejected) quadruples of non-tie human pairs (ties carry no GCPO signal and are
    excluded before, DESIGN §6). Sampling draws from softmax(logits / temperature), seeded by `seed`,
    leaving the global RNG alone. reference: the frozen SFT model, for logp_ref (None when β = 0).
    The caller puts the models in eval mode (no dropout during RL: ratios must start at 1).
    """
    if not pairs:
        raise ValueError("no pairs to roll out")
    if n_samples < 1 or temperature <= 0:
        raise ValueError(f"need n_samples >= 1 and temperature > 0, got {n_samples} and {temperature}")
    quads = [q for pair in pairs for q in pair]
    prompts = encode_quadruples(processor, quads)
    generation = generate_ids(model, processor, prompts, max_new_tokens, temperature, n_samples, seed)
    device = model.device
    inputs = {k: v.to(device) for k, v in completion_batch(processor, prompts, generation).items() if k in INPUT_KEYS}
    completion_ids = generation.completion_ids.to(device)
    mask = generation.completion_mask.to(device, torch.float32)
    prompt_length = prompts["input_ids"].shape[1]
    parsed = torch.tensor([j.score if j.parse_ok else math.nan for j in map(parse_output, generation.texts)],
                          dtype=torch.float32)
    logp_ref = None
    if reference is not None:
        logp_ref = token_logprobs(reference, inputs, completion_ids, prompt_length, temperature)[0] * mask
    return Rollout(
        inputs=inputs, prompt_length=prompt_length, completion_ids=completion_ids, completion_mask=mask,
        parsed=parsed, logp_ref=logp_ref, texts=generation.texts, n_pairs=len(pairs), n_samples=n_samples,
        temperature=temperature,
    )
