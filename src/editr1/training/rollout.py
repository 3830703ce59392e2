"""GCPO rollouts: N traces per side of each human pair from the current policy, their scores τ and
their per-token log-probs (DESIGN §6).

    from editr1.training.rollout import sample_rollout, score_traces, token_logprobs, select_groups
    rollout = sample_rollout(model, processor, [(chosen_quad, rejected_quad), ...], n_samples=8,
                             temperature=1.0, max_new_tokens=512, seed=step, reference=None)
    scored = score_traces(model, processor, rollout, readout="expected")   # ONE forward, grad on
    scored.tau          # [P, 2, N]: side 0 = chosen, 1 = rejected; NaN = the output does not parse (the losses' NaN rule)
    logp_old = scored.logp.detach()                                          # [B, T], B = 2 P N
    loss = gcpo_loss(scored.logp, logp_old, rollout.logp_ref, ...)           # the first PPO epoch
    sub = select_groups(processor, rollout, groups_to_keep)                  # e.g. non-zero advantage
    logp = token_logprobs(model, sub)[0]                                     # later epochs

Rows are pair-major, then side, then sample: row (2p + s) N + j is sample j of side s of pair p
(prompt-major over the 2P prompts [p0 chosen, p0 rejected, p1 chosen, ...], as `generate_ids` orders them).
Prompt g = 2p + s and its N rows form one GCPO group.

The prompt is computed once per group. The N traces of a group share their prompt (system text,
instruction, ~10 questions, two images: about as many tokens as a judgement), so both the sampler
(`sample_completions`) and `token_logprobs` run the prompts alone (2P rows, vision encoder
included), repeat their key/value cache N times and run the completions (2PN rows) on it: the
same numbers as 2PN full sequences (to float rounding; tests/integration/test_gcpo.py checks both
against `generate_ids` and a plain forward), gradients included, at about the cost of the
completions alone. The sampler is a plain loop for the same reason: `generate` prefills every
prompt N times and its per-token machinery cost ~40% of the decoding time of this tiny model.

No redundant forward. Sampling (KV cache, no grad) returns tokens only. The one teacher-forced
pass over prompt + completion that `score_traces` runs gives, together, the log-prob of every
sampled token and the hidden state right after the last generated `<score>` (the `expected`
readout; `editr1.rrm.scoring` runs a pass of its own for it). Run with grad, that same
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
from transformers import DynamicCache, Qwen2_5_VLForConditionalGeneration

from editr1.models.processor import RRMProcessor
from editr1.models.tokenizer import ENDOFTEXT, IM_END, SCORE_OPEN, single_token_id, vision_token_ids
from editr1.rrm.items import Quadruple
from editr1.rrm.parser import parse_output
from editr1.rrm.scoring import encode_quadruples, expected_from_logits, last_token_positions, score_vocabulary
from editr1.training.losses import exact_reward_spread, expected_rewards, score_action_rewards, solved_pairs

READOUTS = ("expected", "parsed")
INPUT_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw")
_COMPACT_SHARE = 0.25  # the sampler drops finished rows once they are more than this share of its batch


@dataclass
class Rollout:
    """The sampled traces of P pairs, 2N rows per pair (see the module docstring for the row order).

    prompts: the model inputs of the G = 2P prompts (left-padded: input_ids, attention_mask,
    mm_token_type_ids [G, L]; pixel_values, image_grid_thw); groups: which prompt of the full
    rollout each of them is (range(2P), or a subset after `select_groups`);
    completion_ids, completion_mask: [B, T], B = G N (mask: float 0/1, 1 up to and including the stop token);
    parsed: [B] float32, the strict parser's score, NaN where the output does not parse;
    logp_ref: [B, T] sampled tokens' log-probs under the reference at `temperature`, 0 off the
    mask, or None when no reference ran; texts: the B completions; score_logp_ref: [B, S + 1] the
    reference's distribution over the score after each trace's last `<score>`
    (`score_action_logprobs`), or None when not asked for (`sample_rollout(reference_scores=True)`).
    """

    prompts: dict[str, Tensor]
    groups: list[int]
    completion_ids: Tensor
    completion_mask: Tensor
    parsed: Tensor
    logp_ref: Tensor | None
    texts: list[str]
    n_pairs: int
    n_samples: int
    temperature: float
    score_logp_ref: Tensor | None = None

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
    hidden: Tensor | None = None


def _prompt_cache(model: Qwen2_5_VLForConditionalGeneration, prompts: dict[str, Tensor],
                  n: int) -> tuple[Tensor, DynamicCache, Tensor]:
    """One pass over the prompts: (last hidden state [G, 1, H], their cache repeated n times
    (rows g n .. g n + n - 1 belong to prompt g), the position of the first completion token [G])."""
    out = model.model(**prompts, use_cache=True)
    positions, _ = model.model.get_rope_index(
        prompts["input_ids"], image_grid_thw=prompts.get("image_grid_thw"), video_grid_thw=None,
        attention_mask=prompts["attention_mask"], mm_token_type_ids=prompts["mm_token_type_ids"])
    start = positions.amax(dim=(0, 2)) + 1  # text after the prompt continues from its largest 3-D position
    cache = DynamicCache(ddp_cache_data=[(layer.keys.repeat_interleave(n, dim=0),
                                          layer.values.repeat_interleave(n, dim=0)) for layer in out.cache.layers])
    return out.last_hidden_state[:, -1:], cache, start


def _completion_hidden(model: Qwen2_5_VLForConditionalGeneration, tokens: Tensor, mask: Tensor, cache: DynamicCache,
                       positions: Tensor) -> Tensor:
    """Hidden states of `tokens` [B, t] after the cached prefix; mask [B, prefix + t]; positions [B, t]."""
    return model.model.language_model(
        inputs_embeds=model.model.get_input_embeddings()(tokens), attention_mask=mask,
        position_ids=positions[None].expand(3, -1, -1), cache=cache, use_cache=True,
    ).last_hidden_state


@torch.no_grad()
def sample_completions(model: Qwen2_5_VLForConditionalGeneration, processor: RRMProcessor, prompts: dict[str, Tensor],
                       n: int, max_new_tokens: int, temperature: float, seed: int) -> tuple[Tensor, Tensor]:
    """Sample n completions of each prompt: (completion_ids [G n, T], completion_mask [G n, T] long).

    Rows are prompt-major (row g n + j is sample j of prompt g). Each token is drawn from
    softmax(logits / temperature) (argmax at temperature 0) with the vision placeholder tokens and
    the embedding rows past the tokenizer suppressed, as `editr1.models.rrm.generate_ids` does;
    a row stops after `<|im_end|>` or `<|endoftext|>` (the mask is 1 up to and including it, ids
    are `<|endoftext|>` after). Seeded by `seed` through its own generator: the global RNG is untouched.
    """
    tokenizer = processor.tokenizer
    eos = torch.tensor(tokenizer.convert_tokens_to_ids([IM_END, ENDOFTEXT]), device=model.device)
    pad_id = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    vocab = model.get_output_embeddings().weight.shape[0]
    suppressed = torch.tensor(vision_token_ids(tokenizer) + list(range(len(tokenizer), vocab)), device=model.device)
    generator = torch.Generator(device=model.device).manual_seed(seed)
    last, cache, start = _prompt_cache(model, prompts, n)
    rows = last.shape[0] * n
    logits = model.get_output_embeddings()(last[:, 0]).repeat_interleave(n, dim=0)
    start = start.repeat_interleave(n)
    prefix = prompts["attention_mask"].shape[1]
    mask = torch.cat([prompts["attention_mask"].repeat_interleave(n, dim=0),
                      prompts["attention_mask"].new_ones(rows, max_new_tokens)], dim=1)
    ids = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long, device=model.device)
    keep = torch.zeros((rows, max_new_tokens), dtype=torch.long, device=model.device)
    active = torch.arange(rows, device=model.device)  # rows still decoding, in batch order
    finished = torch.zeros(rows, dtype=torch.bool, device=model.device)  # among the active rows
    steps = 0
    for step in range(max_new_tokens):
        logits = logits.float()
        logits[:, suppressed] = -math.inf
        if temperature > 0:
            # Gumbel-max: argmax(logits / T + Gumbel noise) is an exact draw from softmax(logits / T),
            # and cheaper on CPU than torch.multinomial over the vocabulary.
            uniform = torch.rand(logits.shape, generator=generator, device=logits.device).clamp_(min=1e-20)
            token = (logits / temperature - torch.log(-torch.log(uniform))).argmax(dim=-1)
        else:
            token = logits.argmax(dim=-1)
        token = token.masked_fill(finished, pad_id)
        ids[active, step] = token
        keep[active, step] = (~finished).long()
        finished |= torch.isin(token, eos)
        steps = step + 1
        if bool(finished.all()) or steps == max_new_tokens:
            break
        if float(finished.float().mean()) > _COMPACT_SHARE:
            # Drop the finished rows from the batch (their cache too): judgements differ in length
            # and a batch otherwise decodes at full width until its longest row stops.
            stay = torch.nonzero(~finished).flatten()
            cache.batch_select_indices(stay)
            active, mask, start, token = active[stay], mask[stay], start[stay], token[stay]
            finished = finished[stay]
        hidden = _completion_hidden(model, token[:, None], mask[:, : prefix + steps], cache, (start + step)[:, None])
        logits = model.get_output_embeddings()(hidden[:, -1])
    return ids[:, :steps], keep[:, :steps]


def token_logprobs(model: Qwen2_5_VLForConditionalGeneration, rollout: Rollout) -> tuple[Tensor, Tensor]:
    """Log-probs of the rollout's completion tokens under `model` at the rollout's temperature.

    One pass over the prompts (with cache), their cache repeated N times, one pass over the
    completions (see the module docstring). Returns (logp [B, T] float32, 0 off the mask;
    hidden [B, T + 1, H]) where hidden[:, t] is the state that predicts completion token t
    (t = 0: the prompt's last position), so hidden[:, T] follows the last token. The LM head runs
    on the masked positions only (padding after a stop token is up to half of a batch).
    Gradients flow when called outside no_grad.
    """
    n, temperature = rollout.n_samples, rollout.temperature
    prompts, completion_ids = rollout.prompts, rollout.completion_ids
    length = completion_ids.shape[1]
    last, cache, start = _prompt_cache(model, prompts, n)
    positions = (start[:, None] + torch.arange(length, device=start.device)).repeat_interleave(n, dim=0)
    mask = torch.cat([prompts["attention_mask"].repeat_interleave(n, dim=0),
                      rollout.completion_mask.to(prompts["attention_mask"].dtype)], dim=1)
    hidden = _completion_hidden(model, completion_ids, mask, cache, positions)
    hidden = torch.cat([last.repeat_interleave(n, dim=0), hidden], dim=1)  # [B, T + 1, H]
    valid = rollout.completion_mask.bool()
    logits = model.get_output_embeddings()(hidden[:, :length][valid]).float()  # [tokens, V]
    if temperature != 1.0:
        logits = logits / temperature
    picked = logits.gather(-1, completion_ids[valid].unsqueeze(-1)).squeeze(-1)
    logp = torch.zeros(valid.shape, dtype=logits.dtype, device=logits.device)
    logp = logp.masked_scatter(valid, picked - torch.logsumexp(logits, dim=-1))
    return logp, hidden


def score_positions(processor: RRMProcessor, completion_ids: Tensor, mask: Tensor) -> Tensor:
    """[B] index of each trace's last generated `<score>` among its completion tokens, -1 where none."""
    return last_token_positions(completion_ids, mask, single_token_id(processor.tokenizer, SCORE_OPEN))


def expected_readout(model: Qwen2_5_VLForConditionalGeneration, processor: RRMProcessor, hidden: Tensor,
                     completion_ids: Tensor, mask: Tensor) -> Tensor:
    """[B] expected score after the last generated `<score>` of each row, NaN where there is none.

    hidden: [B, T + 1, H] from `token_logprobs` (hidden[:, t + 1] follows completion token t, so
    an output truncated right after `<score>` still gets its distribution, from hidden[:, T]).
    The LM head runs on those B positions only, without grad (τ is a reward, not differentiated).
    """
    score_ids, values = score_vocabulary(processor.tokenizer)
    steps = score_positions(processor, completion_ids, mask)
    tau = torch.full((completion_ids.shape[0],), math.nan, dtype=torch.float32)
    rows = torch.nonzero(steps >= 0).flatten()
    if rows.numel():
        with torch.no_grad():
            logits = model.get_output_embeddings()(hidden[rows, steps[rows] + 1].detach())
            tau[rows.cpu()] = expected_from_logits(logits, score_ids, values).cpu()
    return tau


def score_action_logprobs(model: Qwen2_5_VLForConditionalGeneration, processor: RRMProcessor, rollout: Rollout,
                          hidden: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The policy's distribution over the score it writes after each trace's last `<score>`.

    hidden: [B, T + 1, H] from `token_logprobs` (with grad when the result should have it).
    Returns (logp [B, S + 1]: log-probs at the rollout's temperature of the S single-token scores
    (`score_vocabulary`, increasing) and, last, of any other token (the trace then does not parse);
    values [S] float32; has [B] bool: the trace wrote a `<score>`, and logp is meaningful there).
    """
    score_ids, values = score_vocabulary(processor.tokenizer)
    steps = score_positions(processor, rollout.completion_ids, rollout.completion_mask)
    has = steps >= 0
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    state = hidden[rows, steps.clamp(min=0).to(hidden.device) + 1]  # [B, H]: predicts the token after <score>
    logits = model.get_output_embeddings()(state).float() / rollout.temperature
    full = torch.log_softmax(logits, dim=-1)
    scores = full[:, score_ids]  # [B, S]
    other = torch.log1p(-scores.exp().sum(-1).clamp(max=1.0 - 1e-6))  # [B]
    return torch.cat([scores, other.unsqueeze(-1)], dim=-1), torch.tensor(values), has.cpu()


@dataclass
class ExactScore:
    """`policy_tokens: score_exact`: for each trace that parsed, the policy term of its score is the
    PPO surrogate averaged over every score it could have written (`expected_action_objective`),
    each scored by `score_action_rewards` against the other side's traces, with the group's mean
    sampled reward as baseline. rows [B] bool: the traces it covers (the others keep the sampled
    policy term over all their tokens); logp [B, S + 1]: the current policy's, updated each epoch;
    weights [B]: each trace's term is multiplied by it (1, or 1 / max(R̄, floor) with `log_floor`:
    the gradient of log R̄ instead of R̄, R̄ the trace's expected reward under the sampling policy)."""

    rows: Tensor
    logp: Tensor
    logp_old: Tensor
    rewards: Tensor
    baseline: Tensor
    weights: Tensor
    log_floor: float = 0.0

    @classmethod
    def of(cls, model: Qwen2_5_VLForConditionalGeneration, processor: RRMProcessor, rollout: Rollout,
           scored: ScoredTraces, r_w: Tensor, r_l: Tensor, log_floor: float = 0.0) -> "ExactScore":
        logp, values, has = score_action_logprobs(model, processor, rollout, scored.hidden)
        tau = scored.tau  # [P, 2, N]
        rewards = score_action_rewards(tau[:, 0], tau[:, 1], values).reshape(logp.shape).to(logp.device)
        means = torch.stack([r_w, r_l], dim=1).mean(-1, keepdim=True).expand(tau.shape)  # [P, 2, N]
        rows = has & ~tau.reshape(-1).isnan()
        weights = torch.ones(logp.shape[0], device=logp.device)
        if log_floor > 0:  # d log R̄ = dR̄ / R̄: a pair ordered wrong with confidence keeps its gradient
            weights = 1.0 / expected_rewards(logp, rewards).clamp(min=log_floor)
        return cls(rows, logp, logp.detach(), rewards, means.reshape(-1).to(logp.device), weights, log_floor)

    def stats(self, quiet: float = 0.01) -> dict[str, float]:
        """exact_share: traces it covers; exact_signal: their mean `exact_reward_spread`;
        zero_signal_frac: the share of them whose spread is under `quiet` (nothing left to learn there)."""
        spread = exact_reward_spread(self.logp_old, self.rewards)[self.rows.to(self.logp_old.device)]
        out = {"exact_share": float(self.rows.float().mean())}
        if spread.numel():
            out.update(exact_signal=float(spread.mean()), zero_signal_frac=float((spread < quiet).float().mean()))
            if self.log_floor > 0:
                out["exact_weight"] = float(self.weights[self.rows.to(self.weights.device)].mean())
        return out


def score_token_mask(processor: RRMProcessor, rollout: Rollout) -> Tensor:
    """[B, T] mask of the tokens after each trace's last `<score>` (the score and what closes it),
    within `completion_mask`; a trace without one (or with nothing after it) keeps its whole mask —
    it failed somewhere in its text, and every token shares the blame."""
    ids, mask = rollout.completion_ids, rollout.completion_mask
    steps = score_positions(processor, ids, mask)  # [B], -1 = none
    positions = torch.arange(ids.shape[1], device=ids.device)
    after = (positions.unsqueeze(0) > steps.unsqueeze(1)).to(mask.dtype) * mask
    has_score = (steps >= 0) & (after.sum(dim=1) > 0)
    return torch.where(has_score.unsqueeze(1), after, mask)


def score_traces(model: Qwen2_5_VLForConditionalGeneration, processor: RRMProcessor, rollout: Rollout,
                 readout: str) -> ScoredTraces:
    """Log-probs of every sampled token and τ of every trace, from one forward (see module docstring).

    readout: "expected" (from this forward's logits) or "parsed" (the parser's score, no logits needed).
    Either way τ is NaN where the output does not parse.
    """
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    logp, hidden = token_logprobs(model, rollout)
    if readout == "expected":
        # A trace whose score the parser rejects is a failed trace under either readout, so it loses
        # (`gcpo_rewards`): otherwise sampled traces drift to broken score tags that the expected
        # readout still reads (sample parse rate 0.98 → 0.24 in 146 steps at β 0; README, GCPO).
        tau = expected_readout(model, processor, hidden, rollout.completion_ids, rollout.completion_mask)
        tau = tau.masked_fill(~rollout.parsed_ok.to(tau.device), math.nan)
    else:
        tau = rollout.parsed.clone()
    return ScoredTraces(logp, tau.view(rollout.n_pairs, 2, rollout.n_samples), hidden)


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


def select_groups(processor: RRMProcessor, rollout: Rollout, groups: Sequence[int]) -> Rollout:
    """The rollout restricted to some of its groups (prompt g and its N traces; indices into
    `rollout.groups`' positions), their image patches with them, padding columns they do not need cut.

    The result keeps n_pairs and n_samples of the parent (τ is grouped by the full rollout).
    """
    keep = list(groups)
    if not keep:
        raise ValueError("no groups selected")
    n = rollout.n_samples
    rows = [g * n + j for g in keep for j in range(n)]
    prompts = rollout.prompts
    mask = prompts["attention_mask"][keep]
    first = int(mask.any(dim=0).int().argmax())  # left padding that none of the kept prompts needs
    out = {k: prompts[k][keep][:, first:] for k in ("input_ids", "attention_mask", "mm_token_type_ids")}
    if "pixel_values" in prompts:
        grid = prompts["image_grid_thw"]
        owners = _images_per_row(prompts, processor.image_token_id, processor.image_processor.merge_size)
        patches = prompts["pixel_values"].split(grid.prod(dim=1).tolist())
        images = [i for g in keep for i in owners[g]]
        out["pixel_values"] = torch.cat([patches[i] for i in images])
        out["image_grid_thw"] = grid[images]
    rows_t = torch.as_tensor(rows, dtype=torch.long, device=rollout.completion_ids.device)
    length = int(rollout.completion_mask[rows_t].sum(dim=1).max())
    return Rollout(
        prompts=out, groups=[rollout.groups[g] for g in keep],
        completion_ids=rollout.completion_ids[rows_t, :length], completion_mask=rollout.completion_mask[rows_t, :length],
        parsed=rollout.parsed[rows_t.cpu()],
        logp_ref=None if rollout.logp_ref is None else rollout.logp_ref[rows_t, :length],
        texts=[rollout.texts[r] for r in rows], n_pairs=rollout.n_pairs, n_samples=n, temperature=rollout.temperature,
        score_logp_ref=None if rollout.score_logp_ref is None else rollout.score_logp_ref[rows_t],
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
    reference_scores: bool = False,
) -> Rollout:
    """Sample `n_samples` traces on the chosen and on the rejected quadruple of each pair.

    pairs: (chosen, rejected) quadruples of non-tie human pairs (ties carry no GCPO signal and are
    excluded before, DESIGN §6). Sampling (`sample_completions`) draws from softmax(logits / temperature),
    seeded by `seed`, leaving the global RNG alone. reference: the frozen SFT model, for logp_ref (None when β = 0);
    reference_scores: also its distribution over each trace's score (`score_logp_ref`, from the same pass).
    The caller puts the models in eval mode (no dropout during RL: ratios must start at 1).
    """
    if not pairs:
        raise ValueError("no pairs to roll out")
    if n_samples < 1 or temperature <= 0:
        raise ValueError(f"need n_samples >= 1 and temperature > 0, got {n_samples} and {temperature}")
    quads = [q for pair in pairs for q in pair]
    encoded = encode_quadruples(processor, quads)
    prompts = {k: encoded[k].to(model.device) for k in INPUT_KEYS if k in encoded}
    completion_ids, completion_mask = sample_completions(model, processor, prompts, n_samples, max_new_tokens,
                                                         temperature, seed)
    texts = processor.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    parsed = torch.tensor([j.score if j.parse_ok else math.nan for j in map(parse_output, texts)],
                          dtype=torch.float32)
    rollout = Rollout(
        prompts=prompts, groups=list(range(len(quads))), completion_ids=completion_ids,
        completion_mask=completion_mask.float(), parsed=parsed, logp_ref=None, texts=texts,
        n_pairs=len(pairs), n_samples=n_samples, temperature=temperature,
    )
    if reference is not None:
        rollout.logp_ref, hidden = token_logprobs(reference, rollout)
        if reference_scores:
            rollout.score_logp_ref = score_action_logprobs(reference, processor, rollout, hidden)[0]
    elif reference_scores:
        raise ValueError("reference_scores needs the reference model")
    return rollout


def generation_budget(processor: RRMProcessor, texts: Sequence[str]) -> int:
    """1.25 x the longest of `texts` in the processor's tokens (+1 for the stop token), at least 16."""
    if not texts:
        raise ValueError("no trajectories to size the generation budget from: set gcpo.max_new_tokens")
    longest = max(len(ids) for ids in processor.tokenizer(list(texts), add_special_tokens=False)["input_ids"])
    return max(16, math.ceil(1.25 * (longest + 1)))


def step_seed(seed: int, step: int) -> int:
    """The sampling seed of `step`: a function of (seed, step) only, so resumed runs sample alike."""
    return (seed * 1_000_003 + step * 7_919 + 17) % (2**62)


def rollout_stats(rollout: Rollout, tau: Tensor, r_w: Tensor, r_l: Tensor,
                   advantages: Tensor, groups_zero: Tensor) -> dict[str, float]:
    """A step's rollout statistics for the log: rewards, parse rate, τ per side, advantages, zero-advantage
    share, solved share (`solved_pairs`) and response length. tau [P, 2, N]; r_w, r_l [P, N]; advantages
    [P, 2, N]; groups_zero [P, 2]."""
    valid = ~tau.isnan()

    def mean_of(side: int) -> float:
        return float(tau[:, side][valid[:, side]].mean()) if valid[:, side].any() else math.nan

    return {
        "reward_mean": float(torch.cat([r_w, r_l]).mean()),
        "reward_chosen": float(r_w.mean()),
        "parse_rate": float(rollout.parsed_ok.float().mean()),
        "tau_valid": float(valid.float().mean()),
        "tau_chosen": mean_of(0),
        "tau_rejected": mean_of(1),
        "adv_mean": float(advantages.mean()),
        "adv_std": float(advantages.std(unbiased=False)),
        "zero_advantage_frac": float(groups_zero.float().mean()),
        "solved_pairs": float(solved_pairs(r_w, r_l).float().mean()),
        "response_length": float(rollout.lengths.mean()),
    }
