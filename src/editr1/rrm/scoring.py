"""Score quadruples with the RRM: batched generation, then the `parsed` and `expected` readouts (DESIGN §4).

    from editr1.rrm.scoring import parse_rate, rewards, score
    scored = score(model, processor, quads)                                    # greedy, readout "expected"
    scored = score(model, processor, quads, n_samples=4, temperature=1.0, seed=0, readout="parsed")
    rewards(scored, fallback=0.0)     # one float per quadruple (None → fallback)
    parse_rate(scored)                # share of generated outputs that parse
    scored[0].judgement.principle_scores                                       # per-principle 0/1 answers

Readouts. `parsed` is the strict parser's score (`parse_output`). `expected` is Σ_s p(s)·s over
the score tokens at the position right after the LAST generated `<score>` token, with p the
model's softmax restricted to the score tokens and renormalised, conditioned on the generated
reasoning (FINDINGS.md: it beats the greedy parsed score and nearly removes ties).

How `expected` is computed. `generate_ids` returns no logits, so after generation ONE extra
teacher-forced forward pass runs over prompt + completion (`completion_batch`), cut after the
last `<score>` of the batch; only the hidden states at the `<score>` positions go through the LM
head. Its cost is about one prefill of the batch (vision encoder included) plus the completion
tokens, without a KV cache; it is skipped for a chunk where no output has a `<score>` token and
entirely with ``readout="parsed"`` (then every `ScoredSample.expected` is None). The logits are the
model's own (temperature 1), whatever temperature sampled the reasoning. A truncated output that
ends with `<score>` still gets an expected score: the forward pass gives the distribution of the
token after it, which generation never drew. `expected` is None only when no `<score>` token was
generated (text spelling "<score>" from smaller tokens does not count).

Score tokens. The tiny RRM's tokenizer (and any `load_rrm` checkpoint) has "0" … "10" as single
tokens. For a tokenizer where some are not (a hub Qwen tokenizer before `add_score_tokens`:
"10" is two tokens), the readout weighs only the scores that are single tokens — then 10 cannot be
reached and the expectation is biased low; `score_vocabulary` tells which scores are used.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from transformers import BatchFeature, PreTrainedTokenizerBase, Qwen2_5_VLForConditionalGeneration

from editr1.models.processor import RRMProcessor, encode_batch
from editr1.models.rrm import Generation, completion_batch, generate_ids
from editr1.models.tokenizer import MAX_SCORE, SCORE_OPEN, single_token_id
from editr1.rrm.items import Quadruple
from editr1.rrm.parser import Judgement, parse_output
from editr1.rrm.prompt import render_messages

Readout = Literal["parsed", "expected"]
READOUTS: tuple[str, ...] = get_args(Readout)


@dataclass(frozen=True)
class ScoredSample:
    """One generated RRM output and its two readouts.

    text: the generated output (special tokens removed).
    judgement: parse_output(text).
    parsed: judgement.score if judgement.parse_ok else None.
    expected: Σ_s p(s)·s over the score tokens right after the last generated `<score>` token;
        None when no `<score>` token was generated or when the readout was "parsed" (not computed).
    """

    text: str
    judgement: Judgement
    parsed: float | None
    expected: float | None


@dataclass(frozen=True)
class Scored:
    """The RRM's verdict on one quadruple, over its ``n_samples`` outputs.

    samples: the outputs, in generation order.
    readout: which readout `score` averages.
    score: mean over samples of the chosen readout, ignoring None; None if all are None.
    parse_ok: any sample parsed.
    judgement: the first parsed sample's judgement (else the first sample's): per-principle answers.
    """

    samples: tuple[ScoredSample, ...]
    readout: Readout
    score: float | None
    parse_ok: bool
    judgement: Judgement

    @property
    def text(self) -> str:
        """The first sample's text."""
        return self.samples[0].text


def score_vocabulary(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[float]]:
    """(token ids, score values) of the scores 0 … 10 that are single tokens, in increasing value.

    Raises ValueError when none is.
    """
    ids, values = [], []
    for value in range(MAX_SCORE + 1):
        try:
            ids.append(single_token_id(tokenizer, str(value)))
        except ValueError:
            continue  # e.g. "10" in a hub Qwen tokenizer: the readout does without it
        values.append(float(value))
    if not ids:
        raise ValueError("no score 0..10 is a single token: the expected readout is impossible")
    return ids, values


def expected_from_logits(
    logits: torch.Tensor, score_ids: Sequence[int], values: Sequence[float] | None = None
) -> torch.Tensor:
    """Σ_k softmax(logits[..., score_ids])_k · values_k: the expected score.

    logits: (..., V) next-token logits; score_ids: (K,) token ids; values: (K,) the score each
    id stands for (default 0, 1, …, K-1). Returns (...) float32. The softmax over the K score
    tokens equals the full softmax renormalised over them. Computed in float32 (bf16 logits).
    """
    if values is None:
        values = range(len(score_ids))
    if len(values) != len(score_ids):
        raise ValueError(f"{len(score_ids)} score ids but {len(values)} values")
    index = torch.as_tensor(list(score_ids), dtype=torch.long, device=logits.device)
    weights = torch.as_tensor(list(values), dtype=torch.float32, device=logits.device)
    probs = logits.index_select(-1, index).float().softmax(dim=-1)
    return probs @ weights


def last_token_positions(completion_ids: torch.Tensor, completion_mask: torch.Tensor, token_id: int) -> torch.Tensor:
    """Index of the last ``token_id`` among the generated tokens of each row, or -1 when none.

    completion_ids, completion_mask: (N, T) as in `Generation`. Returns (N,) long.
    """
    hit = (completion_ids == token_id) & completion_mask.bool()
    steps = torch.arange(1, completion_ids.shape[1] + 1, device=completion_ids.device)
    return (hit.long() * steps).amax(dim=1) - 1


def encode_quadruples(processor: RRMProcessor, quads: Sequence[Quadruple]) -> BatchFeature:
    """Left-padded `encode_batch` inputs for the RRM prompts of ``quads`` (source, then edited image)."""
    messages = [render_messages(q.instruction, q.principles, q.source, q.edited) for q in quads]
    return encode_batch(processor, messages, [[q.source, q.edited] for q in quads])


@torch.no_grad()
def expected_scores(
    model: Qwen2_5_VLForConditionalGeneration, processor: RRMProcessor, batch: BatchFeature, generation: Generation
) -> list[float | None]:
    """The expected readout of every row of ``generation`` (example-major), by one teacher-forced pass.

    Rows without a generated `<score>` get None; when there is none at all no forward runs.
    Raises ValueError when `<score>` is not a single token of ``processor.tokenizer``.
    """
    tokenizer = processor.tokenizer
    open_id = single_token_id(tokenizer, SCORE_OPEN)
    score_ids, values = score_vocabulary(tokenizer)
    steps = last_token_positions(generation.completion_ids, generation.completion_mask, open_id).cpu()
    rows = torch.nonzero(steps >= 0).flatten()
    if rows.numel() == 0:
        return [None] * len(steps)
    prompt_length = batch["input_ids"].shape[1]
    positions = prompt_length + steps[rows]
    inputs = completion_batch(processor, batch, generation)
    end = int(positions.max()) + 1  # nothing after the last <score> changes the logits we read
    for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
        inputs[key] = inputs[key][:, :end]
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    # The decoder alone: only the N score positions go through the LM head, not N x L x V logits.
    hidden = model.model(**inputs, use_cache=False).last_hidden_state
    logits = model.get_output_embeddings()(hidden[rows.to(hidden.device), positions.to(hidden.device)])
    expected = expected_from_logits(logits, score_ids, values).tolist()
    out: list[float | None] = [None] * len(steps)
    for row, value in zip(rows.tolist(), expected):
        out[row] = value
    return out


def _aggregate(samples: Sequence[ScoredSample], readout: Readout) -> Scored:
    chosen = [s.parsed if readout == "parsed" else s.expected for s in samples]
    present = [v for v in chosen if v is not None]
    parsed = [s for s in samples if s.judgement.parse_ok]
    return Scored(
        samples=tuple(samples),
        readout=readout,
        score=sum(present) / len(present) if present else None,
        parse_ok=bool(parsed),
        judgement=(parsed[0] if parsed else samples[0]).judgement,
    )


@torch.no_grad()
def score_batch(
    model: Qwen2_5_VLForConditionalGeneration,
    processor: RRMProcessor,
    batch: BatchFeature,
    *,
    n_samples: int = 1,
    readout: Readout = "expected",
    temperature: float = 0.0,
    max_new_tokens: int = 256,
    seed: int | None = None,
) -> list[Scored]:
    """`score` for one pre-built `encode_quadruples` batch (generated in one call); the model must be in eval mode."""
    generation = generate_ids(model, processor, batch, max_new_tokens, temperature, n_samples, seed)
    if readout == "expected":
        expected = expected_scores(model, processor, batch, generation)
    else:
        expected = [None] * len(generation.texts)
    samples = []
    for text, value in zip(generation.texts, expected):
        judgement = parse_output(text)
        samples.append(ScoredSample(text, judgement, judgement.score if judgement.parse_ok else None, value))
    return [_aggregate(samples[i : i + n_samples], readout) for i in range(0, len(samples), n_samples)]


def score(
    model: Qwen2_5_VLForConditionalGeneration,
    processor: RRMProcessor,
    quads: Sequence[Quadruple],
    *,
    n_samples: int = 1,
    batch_size: int = 16,
    readout: Readout = "expected",
    temperature: float = 0.0,
    max_new_tokens: int = 256,
    seed: int | None = None,
) -> list[Scored]:
    """Judge each quadruple with ``n_samples`` RRM outputs; one `Scored` per quadruple, in order.

    Quadruples are generated in chunks of ``batch_size`` (left-padded, all samples of a chunk in
    one `generate_ids` call). ``temperature == 0`` is greedy and needs ``n_samples == 1``
    (identical greedy samples are pointless: ValueError). Sampling uses seed ``seed + chunk index``
    (a fresh random seed when None), so for a fixed seed the samples depend on ``batch_size``;
    the global RNG is never touched. The model runs in eval mode under no_grad and gets its
    training mode back afterwards. See the module docstring for the readouts and their cost.
    """
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    if n_samples < 1 or batch_size < 1 or max_new_tokens < 1:
        raise ValueError(
            f"need n_samples, batch_size, max_new_tokens >= 1, got {n_samples}, {batch_size}, {max_new_tokens}"
        )
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0 and n_samples > 1:
        raise ValueError(f"n_samples={n_samples} at temperature 0 gives identical greedy samples: use temperature > 0")
    if temperature > 0 and seed is None:
        seed = random.SystemRandom().randrange(2**62)  # unseeded, yet leaves every global RNG alone
    was_training = model.training
    model.eval()
    try:
        out: list[Scored] = []
        for k, start in enumerate(range(0, len(quads), batch_size)):
            batch = encode_quadruples(processor, quads[start : start + batch_size])
            chunk_seed = seed + k if temperature > 0 else None
            out += score_batch(
                model, processor, batch, n_samples=n_samples, readout=readout,
                temperature=temperature, max_new_tokens=max_new_tokens, seed=chunk_seed,
            )
        return out
    finally:
        model.train(was_training)


def rewards(scored: Sequence[Scored], fallback: float = 0.0) -> list[float]:
    """One reward per quadruple: its score, or ``fallback`` when it has none."""
    return [s.score if s.score is not None else float(fallback) for s in scored]


def parse_rate(scored: Sequence[Scored]) -> float:
    """Share of all generated outputs (every sample of every quadruple) that parse; ValueError if none."""
    flags = [sample.judgement.parse_ok for s in scored for sample in s.samples]
    if not flags:
        raise ValueError("no scored outputs")
    return sum(flags) / len(flags)
