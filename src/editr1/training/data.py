"""SFT examples for the RRM: encode (prompt, teacher trajectory) pairs and collate them into batches.

    from editr1.training.data import SFTExample, encode_sft_batch, sft_examples
    examples = sft_examples(load_trajectories(path, split="train"), ImageLoader(store))
    batch = encode_sft_batch(processor, examples[:32])
    logits = model(**model_inputs(batch)).logits
    loss = sft_token_loss(logits, batch["labels"])              # editr1.training.losses

An example is the RRM's chat prompt (system + user turn with the source image, the edited image,
the instruction and the numbered principles, exactly as `editr1.rrm.prompt.render_messages` and
`editr1.rrm.scoring` render it for generation) followed by the trajectory text and ``<|im_end|>``
as the assistant turn. Labels are -100 everywhere except on the trajectory tokens and the
``<|im_end|>`` that ends them: the model learns to write the judgement and to stop.

Batches are padded on the RIGHT. Qwen2.5-VL derives its 3-D rotary positions from the attention
mask, so the real tokens of every row get the same positions as without padding, and padding at
the end is never attended to by a causal model (tests/unit/test_sft_data.py checks that the loss of
a padded batch equals the per-example losses).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from transformers import BatchFeature
from transformers.modeling_outputs import BaseModelOutputWithPooling

from editr1.models.processor import RRMProcessor, encode_batch
from editr1.models.tokenizer import ENDOFTEXT, IM_END
from editr1.rrm.items import Context, Quadruple
from editr1.rrm.principles import Principle
from editr1.rrm.prompt import render_messages
from editr1.training.losses import IGNORE_INDEX, build_sft_labels

# What the model's forward takes from an `encode_sft_batch` batch (labels excluded: the loss is ours).
MODEL_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw")


CAPTION_REQUEST = "Describe both images."
KINDS = ("judge", "caption")


@dataclass(frozen=True)
class SFTExample:
    """One supervised example: what the RRM sees (``quad``) and the text it must write (``target``).

    kind "judge": the RRM prompt (system, images, instruction, principles) → the whole trajectory.
    kind "caption": the two images and `CAPTION_REQUEST` only → the first line of the trajectory
    (the teacher's description of both images): a short perception example (see `caption_examples`).
    """

    quad: Quadruple
    target: str
    kind: str = "judge"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")


def quadruple_of(row: dict[str, Any], images: Callable[[str], Image.Image]) -> Quadruple:
    """The quadruple of a trajectory row (`editr1.coldstart.load_trajectories`); images by sha."""
    context = Context(row["context_id"], row["instruction"], images(row["source_sha"]), row["source_sha"],
                      row.get("category"))
    principles = tuple(Principle(p["question"], p["category"]) for p in row["principles"])
    return Quadruple(context, images(row["edited_sha"]), principles, row["edited_sha"])


def sft_examples(rows: Sequence[dict[str, Any]], images: Callable[[str], Image.Image]) -> list[SFTExample]:
    """One `SFTExample` per trajectory row, in order (filter accepted rows and splits before)."""
    examples = []
    for row in rows:
        if not row["text"].strip():
            raise ValueError(f"trajectory of {row['context_id'][:12]}… / {row['edited_sha'][:12]}… has no text")
        examples.append(SFTExample(quadruple_of(row, images), row["text"]))
    return examples


def caption_examples(examples: Sequence[SFTExample]) -> list[SFTExample]:
    """Caption examples from judge examples: same images, target = the first line of the trajectory.

    Examples whose trajectory is a single line (nothing but a judgement) are skipped.
    """
    out = []
    for ex in examples:
        first, newline, _ = ex.target.strip().partition("\n")
        if newline and first.strip():
            out.append(SFTExample(ex.quad, first.strip(), "caption"))
    return out


def prompt_messages(example: SFTExample) -> list[dict[str, Any]]:
    """The prompt of ``example``: for "judge" the RRM prompt, identical to the one used for scoring;
    for "caption" a user turn with the two images and `CAPTION_REQUEST` (the chat template's default
    system turn)."""
    quad = example.quad
    if example.kind == "judge":
        return render_messages(quad.instruction, quad.principles, quad.source, quad.edited)
    return [{"role": "user", "content": [
        {"type": "text", "text": "Source image:"}, {"type": "image", "image": quad.source},
        {"type": "text", "text": "Edited image:"}, {"type": "image", "image": quad.edited},
        {"type": "text", "text": CAPTION_REQUEST},
    ]}]


def target_ids(processor: RRMProcessor, target: str) -> list[int]:
    """Token ids of the assistant turn's supervised part: ``target`` then ``<|im_end|>``.

    Tokenised on its own: the prompt ends with ``<|im_start|>assistant\\n`` (a special token and a
    newline), so no BPE merge can cross into the target and these are exactly the ids the model
    generates after the prompt.
    """
    return processor.tokenizer(target + IM_END, add_special_tokens=False)["input_ids"]


# A check line of a judgement's reasoning ends in its verdict: "3. blend: none. yes".
_VERDICT = re.compile(r"\b(yes|no)\W*$")
_JSON_VERDICT = re.compile(r'"score":\s*([01])\b')
_SCORE = re.compile(r"<score>([^<]*)</score>")

# What a target token holds (`target_part_ids`), in increasing order of precedence.
PART_OTHER, PART_DESCRIPTION, PART_FINDING, PART_CHECK, PART_JSON, PART_SCORE = range(6)
Span = tuple[int, int]


def target_parts(target: str) -> dict[int, list[Span]]:
    """Character spans of a judgement's parts, by part: PART_DESCRIPTION, its first line with the
    newline (none for a one-line target); PART_CHECK, the yes/no that ends each check line (the
    lines after the description, up to the JSON list); PART_FINDING, what a check line found — the
    text between its first ``": "`` and its verdict ("blurry. " in "9. blur: blurry. no"); PART_JSON,
    each 0|1 ``"score"`` of the JSON list; PART_SCORE, the final score (between the last ``<score>``
    and ``</score>``)."""
    parts: dict[int, list[Span]] = {PART_DESCRIPTION: [], PART_FINDING: [], PART_CHECK: [], PART_JSON: [],
                                    PART_SCORE: []}
    end = target.find("\n")
    if end >= 0:
        parts[PART_DESCRIPTION].append((0, end + 1))
        stop = reasoning_end(target)
        parts[PART_JSON] = [(stop + m.start(1), stop + m.end(1)) for m in _JSON_VERDICT.finditer(target[stop:])]
        start = end + 1
        for line in target[start:stop].split("\n"):
            match = _VERDICT.search(line)
            if match:
                parts[PART_CHECK].append((start + match.start(1), start + match.end(1)))
                colon = line.find(": ")
                if 0 <= colon and colon + 2 < match.start(1):
                    parts[PART_FINDING].append((start + colon + 2, start + match.start(1)))
            start += len(line) + 1
    scores = list(_SCORE.finditer(target))
    if scores:
        parts[PART_SCORE].append((scores[-1].start(1), scores[-1].end(1)))
    return parts


def target_part_ids(processor: RRMProcessor, target: str) -> tuple[list[int], list[int]]:
    """`target_ids` and, per id, the part of the judgement it holds (`target_parts`; PART_OTHER
    elsewhere; a token over two parts gets the later one). Tokenised once, with offsets."""
    encoded = processor.tokenizer(target + IM_END, add_special_tokens=False, return_offsets_mapping=True)
    spans = target_parts(target)
    by_char = [PART_OTHER] * (len(target) + len(IM_END))  # the latest part over each character
    for part, part_spans in spans.items():
        for s_start, s_end in part_spans:
            by_char[s_start:s_end] = [max(part, p) for p in by_char[s_start:s_end]]
    parts = []
    for start, end in encoded["offset_mapping"]:
        if start < end:
            parts.append(max(by_char[start:end]))
        else:  # an empty token holds a part only strictly inside one of its spans
            parts.append(max((part for part, part_spans in spans.items()
                              if any(s_start < start < s_end for s_start, s_end in part_spans)), default=PART_OTHER))
    return encoded["input_ids"], parts


def reasoning_end(target: str) -> int:
    """Where a judgement's reasoning (its description line and check lines) ends: the start of the
    first line after the description that opens with ``[``, ``{`` or ``<`` (the JSON list), else
    ``len(target)``; 0 for a one-line target (a caption has no reasoning to feed back)."""
    end = target.find("\n")
    if end < 0:
        return 0
    start = end + 1
    for line in target[start:].split("\n"):
        if line.lstrip().startswith(("[", "{", "<")):
            return start
        start += len(line) + 1
    return len(target)


def self_feed_mask(processor: RRMProcessor, target: str) -> list[bool]:
    """Per `target_ids` id: True for a token of the reasoning (`reasoning_end`) that is not a
    verdict — the words `SFTConfig.self_feed` may replace by the model's own predictions."""
    encoded = processor.tokenizer(target + IM_END, add_special_tokens=False, return_offsets_mapping=True)
    end = reasoning_end(target)
    verdicts = target_parts(target)[PART_CHECK]
    return [stop <= end and not any(start < v_end and stop > v_start for v_start, v_end in verdicts)
            for start, stop in encoded["offset_mapping"]]


def target_weights(processor: RRMProcessor, target: str, description_weight: float = 1.0,
                   verdict_weight: float = 1.0, finding_weight: float = 1.0) -> tuple[list[int], list[float]]:
    """`target_ids` and a loss weight per id: ``description_weight`` on the description line,
    ``finding_weight`` on the check lines' findings, ``verdict_weight`` on the verdicts — the checks'
    yes/no, the JSON list's 0|1 and the final score (`target_part_ids`) — and 1 elsewhere."""
    ids, parts = target_part_ids(processor, target)
    weight = {PART_OTHER: 1.0, PART_DESCRIPTION: description_weight, PART_FINDING: finding_weight,
              PART_CHECK: verdict_weight, PART_JSON: verdict_weight, PART_SCORE: verdict_weight}
    return ids, [weight[p] for p in parts]


def description_tokens(processor: RRMProcessor, target: str) -> int:
    """How many of ``target_ids(processor, target)`` hold the target's first line (the description a
    judgement opens with, up to and with the token that holds its newline; 0 for a one-line target)."""
    return target_part_ids(processor, target)[1].count(PART_DESCRIPTION)


def encode_sft_batch(processor: RRMProcessor, examples: Sequence[SFTExample],
                     description_weight: float = 1.0, verdict_weight: float = 1.0,
                     self_feed: bool = False, finding_weight: float = 1.0,
                     target_cache: dict | None = None) -> BatchFeature:
    """Right-padded training inputs for ``examples``.

    Returns ``input_ids``, ``attention_mask``, ``mm_token_type_ids``, ``labels`` (B, L) — labels
    aligned with input_ids (not shifted), -100 outside the targets — and ``pixel_values``
    (n_patches, C*T*P*P), ``image_grid_thw`` (2B, 3): source then edited image of each example.
    Padding uses ``<|endoftext|>`` with attention 0, token type 0 and label -100.
    With ``description_weight``, ``verdict_weight`` or ``finding_weight`` != 1 also ``loss_weights``
    (B, L) for `sft_token_loss`: those weights on the description line, the verdicts and the check
    lines' findings of each judgement
    (`target_weights`), 1 on the other target tokens (caption targets are not weighted).
    With ``self_feed`` also ``self_feed_mask`` (B, L) bool: the judgement tokens `self_feed_mask`
    marks (never a prompt, caption or padding token).
    ``target_cache`` (a dict the caller keeps, e.g. one per trainer): each target's ids and weights
    are tokenised and split into parts once and looked up after — ~45% of an SFT step's encoding
    time (`bench/sft_encode.py`); the batch is the same with or without it (tested).
    """
    if not examples:
        raise ValueError("no examples to encode")
    quads = [ex.quad for ex in examples]
    # The processor expands each image placeholder into its image tokens; its left padding is undone below.
    prompts = encode_batch(processor, [prompt_messages(ex) for ex in examples], [[q.source, q.edited] for q in quads])
    pad_id = processor.tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    weighted = description_weight != 1.0 or verdict_weight != 1.0 or finding_weight != 1.0
    rows = []
    for i, ex in enumerate(examples):
        keep = prompts["attention_mask"][i].bool()
        prompt_ids = prompts["input_ids"][i][keep]
        prompt_types = prompts["mm_token_type_ids"][i][keep]
        judge_weighted = ex.kind == "judge" and weighted
        key = (ex.target, description_weight, verdict_weight, finding_weight) if judge_weighted else (ex.target,)
        cached = target_cache.get(key) if target_cache is not None else None
        if cached is not None:
            target, target_w = cached
        elif judge_weighted:
            target, target_w = target_weights(processor, ex.target, description_weight, verdict_weight, finding_weight)
        else:
            target = target_ids(processor, ex.target)
            target_w = [1.0] * len(target)
        if target_cache is not None and cached is None:
            target_cache[key] = (target, target_w)
        completion = torch.tensor(target, dtype=prompt_ids.dtype)
        ids = torch.cat([prompt_ids, completion])
        types = torch.cat([prompt_types, torch.zeros_like(completion)])
        is_target = torch.cat([torch.zeros_like(prompt_ids, dtype=torch.bool),
                               torch.ones_like(completion, dtype=torch.bool)])
        weight = torch.cat([torch.ones(len(prompt_ids)), torch.tensor(target_w)]) if weighted else None
        feed = self_feed_mask(processor, ex.target) if self_feed and ex.kind == "judge" else [False] * len(target)
        feedable = torch.cat([torch.zeros(len(prompt_ids), dtype=torch.bool), torch.tensor(feed, dtype=torch.bool)])
        rows.append((ids, types, is_target, weight, feedable))
    length = max(len(row[0]) for row in rows)
    batch_size = len(rows)
    input_ids = torch.full((batch_size, length), pad_id, dtype=rows[0][0].dtype)
    attention_mask = torch.zeros((batch_size, length), dtype=torch.long)
    token_types = torch.zeros((batch_size, length), dtype=prompts["mm_token_type_ids"].dtype)
    target_mask = torch.zeros((batch_size, length), dtype=torch.bool)
    weights = torch.zeros((batch_size, length)) if weighted else None
    feed_mask = torch.zeros((batch_size, length), dtype=torch.bool)
    for i, (ids, types, is_target, weight, feedable) in enumerate(rows):
        n = len(ids)
        input_ids[i, :n] = ids
        attention_mask[i, :n] = 1
        token_types[i, :n] = types
        target_mask[i, :n] = is_target
        feed_mask[i, :n] = feedable
        if weights is not None:
            weights[i, :n] = weight
    extra = {"loss_weights": weights} if weights is not None else {}
    if self_feed:
        extra["self_feed_mask"] = feed_mask
    return BatchFeature({**extra,
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "mm_token_type_ids": token_types,
        "labels": build_sft_labels(input_ids, target_mask),
        "pixel_values": prompts["pixel_values"],
        "image_grid_thw": prompts["image_grid_thw"],
    })


def model_inputs(batch: BatchFeature, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The forward's keyword arguments of an `encode_sft_batch` batch, on ``device``. A batch with
    ``image_features`` (the vision tower's output, `editr1.training.example_cache`) hands them to
    Qwen2.5-VL as ``mm_encoder_outputs``, so the tower is not run again."""
    inputs: dict[str, Any] = {k: batch[k].to(device) for k in MODEL_KEYS if k in batch}
    if "image_features" in batch:
        features = batch["image_features"].to(device)
        inputs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=(features,))}
    return inputs


def token_counts(batch: BatchFeature) -> dict[str, int]:
    """Tokens in a batch: ``total`` (non-padding), ``target`` (supervised) and ``padded`` (B * L)."""
    return {
        "total": int(batch["attention_mask"].sum()),
        "target": int((batch["labels"] != IGNORE_INDEX).sum()),
        "padded": int(batch["input_ids"].numel()),
    }
