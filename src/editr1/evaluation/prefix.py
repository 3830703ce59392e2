"""Where a judgement goes wrong: pairwise accuracy with the teacher's own text forced as a prefix.

    report = prefix_report(model, processor, storage, split="val", max_pairs=128)

A judgement is written in order — the description of both images, one check line per principle
(its finding and a yes/no), the JSON list of 0/1, the score — and in generation each part is
conditioned on the model's own earlier parts. For each held-out non-tie pair both images are judged
three times, greedily, with the expected readout:

- ``none``: free-running, as in `editr1 eval rrm`;
- ``description``: the teacher's description line forced, the rest generated;
- ``reasoning``: the teacher's description and check lines forced (`reasoning_end`), so only the
  JSON list and the score are generated.

If ``description`` is far above ``none`` the model misreads the images; if ``reasoning`` is far
above ``description`` it reads the right description and still draws the wrong checks from it; if
``reasoning`` itself is low it does not turn its checks into a score. Teacher text comes from the
cold-start trajectories of the same images (pairs without one for both images are left out and
counted). Besides accuracy each mode reports ``line_agreement``: the share of the teacher's lines the
model's judgement holds verbatim at the same line number.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import BatchFeature, Qwen2_5_VLForConditionalGeneration

from editr1.coldstart import load_trajectories
from editr1.evaluation.pairwise import grouped
from editr1.evaluation.rrm_eval import pair_kinds
from editr1.lake.catalog import curated_pairs
from editr1.models.processor import RRMProcessor
from editr1.models.rrm import generate_ids
from editr1.models.tokenizer import ENDOFTEXT
from editr1.rrm.scoring import encode_quadruples, expected_scores
from editr1.training.data import quadruple_of, reasoning_end
from editr1.world.truth import WorldTruth

MODES = ("none", "description", "reasoning")


def teacher_prefix(target: str, mode: str) -> str:
    """The part of the teacher's judgement ``target`` that ``mode`` forces (see the module docstring)."""
    if mode == "none":
        return ""
    if mode == "description":
        newline = target.find("\n")
        return target if newline < 0 else target[: newline + 1]
    if mode == "reasoning":
        return target[: reasoning_end(target)]
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def prefix_ids(processor: RRMProcessor, target: str, mode: str) -> tuple[list[int], str]:
    """The teacher's tokens that ``mode`` forces, and their text: the longest run of ``target``'s own
    tokens (`target_ids`, tokenised whole as in SFT) that ends within `teacher_prefix`. Tokenising
    the prefix on its own could split a token that crosses its end (the tiny RRM's BPE merges
    across spaces and newlines) into ids the model never saw there."""
    cut = len(teacher_prefix(target, mode))
    encoded = processor.tokenizer(target, add_special_tokens=False, return_offsets_mapping=True)
    n = 0
    while n < len(encoded["input_ids"]) and encoded["offset_mapping"][n][1] <= cut:
        n += 1
    end = encoded["offset_mapping"][n - 1][1] if n else 0
    return encoded["input_ids"][:n], target[:end]


def append_ids(processor: RRMProcessor, batch: BatchFeature, extra_ids: Sequence[Sequence[int]]) -> BatchFeature:
    """``batch`` (left-padded `encode_batch` inputs) with ``extra_ids[i]`` appended to row i,
    re-padded on the left; the images are untouched."""
    pad_id = processor.tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    rows = []
    for i, added in enumerate(extra_ids):
        keep = batch["attention_mask"][i].bool()
        ids = batch["input_ids"][i][keep]
        types = batch["mm_token_type_ids"][i][keep]
        extra = torch.tensor(list(added), dtype=ids.dtype)
        rows.append((torch.cat([ids, extra]), torch.cat([types, torch.zeros(len(extra), dtype=types.dtype)])))
    length = max(len(ids) for ids, _ in rows)
    out = {key: value for key, value in batch.items()}
    out["input_ids"] = torch.full((len(rows), length), pad_id, dtype=batch["input_ids"].dtype)
    out["attention_mask"] = torch.zeros((len(rows), length), dtype=batch["attention_mask"].dtype)
    out["mm_token_type_ids"] = torch.zeros((len(rows), length), dtype=batch["mm_token_type_ids"].dtype)
    for i, (ids, types) in enumerate(rows):
        out["input_ids"][i, length - len(ids):] = ids
        out["attention_mask"][i, length - len(ids):] = 1
        out["mm_token_type_ids"][i, length - len(ids):] = types
    return BatchFeature(out)


@torch.no_grad()
def judge_with_prefix(model: Qwen2_5_VLForConditionalGeneration, processor: RRMProcessor,
                      rows: Sequence[Mapping[str, Any]], images: Callable[[str], Image.Image], mode: str, *,
                      batch_size: int = 16, max_new_tokens: int = 512) -> list[tuple[str, float | None]]:
    """Per trajectory row: (the whole judgement — the forced prefix and what the model wrote after it,
    the expected readout or None). Greedy; the model runs in eval mode and gets its mode back."""
    was_training = model.training
    model.eval()
    try:
        out = []
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            forced = [prefix_ids(processor, row["text"], mode) for row in chunk]
            prefixes = [text for _, text in forced]
            batch = append_ids(processor, encode_quadruples(processor, [quadruple_of(dict(r), images) for r in chunk]),
                               [ids for ids, _ in forced])
            generation = generate_ids(model, processor, batch, max_new_tokens)
            values = expected_scores(model, processor, batch, generation)
            out += [(prefix + text, value) for prefix, text, value in zip(prefixes, generation.texts, values)]
        return out
    finally:
        model.train(was_training)


def line_agreement(target: str, text: str) -> float:
    """Share of ``target``'s lines that ``text`` holds verbatim at the same line number."""
    lines = target.split("\n")
    return sum(a == b for a, b in zip(lines, text.split("\n"))) / len(lines)


def prefix_report(model: Qwen2_5_VLForConditionalGeneration, processor: RRMProcessor, storage: Path,
                  images: Callable[[str], Image.Image], *, split: str = "val", max_pairs: int = 128,
                  modes: Sequence[str] = MODES, batch_size: int = 16, max_new_tokens: int = 512) -> dict[str, Any]:
    """Per mode: ``acc_no_ties`` (strict, expected readout), ``per_kind`` (world pair kinds) and
    ``line_agreement`` over the first ``max_pairs`` non-tie pairs of ``split`` that have a teacher
    trajectory for both images; ``pairs`` and ``pairs_without_trajectory`` say how many were used
    and left out."""
    for mode in modes:
        teacher_prefix("", mode)  # an unknown mode fails before any generation
    storage = Path(storage)
    texts = {(r["context_id"], r["edited_sha"]): r for r in load_trajectories(storage / "rrm" / "trajectories.parquet")
             if r["split"] == split and r["text"].strip()}
    candidates = [p for p in curated_pairs(storage, split).to_pylist() if p["label"] != "tie"]
    pairs = [p for p in candidates
             if (p["context_id"], p["chosen_sha"]) in texts and (p["context_id"], p["rejected_sha"]) in texts]
    missing = len(candidates) - len(pairs)
    pairs = pairs[:max_pairs]
    if not pairs:
        raise ValueError(f"no non-tie {split} pairs with teacher trajectories for both images in {storage}")
    keys = list(dict.fromkeys((p["context_id"], sha) for p in pairs for sha in (p["chosen_sha"], p["rejected_sha"])))
    kinds = pair_kinds(pairs, WorldTruth.from_lake(storage))
    report: dict[str, Any] = {"split": split, "pairs": len(pairs), "pairs_without_trajectory": missing, "modes": {}}
    for mode in modes:
        judged = dict(zip(keys, judge_with_prefix(model, processor, [texts[k] for k in keys], images, mode,
                                                  batch_size=batch_size, max_new_tokens=max_new_tokens)))
        correct = []
        for pair in pairs:
            chosen = judged[(pair["context_id"], pair["chosen_sha"])][1]
            rejected = judged[(pair["context_id"], pair["rejected_sha"])][1]
            correct.append(chosen is not None and rejected is not None and chosen > rejected)
        agreement = [line_agreement(texts[k]["text"], judged[k][0]) for k in keys]
        report["modes"][mode] = {
            "acc_no_ties": sum(correct) / len(correct),
            "line_agreement": sum(agreement) / len(agreement),
            "per_kind": {k: v for k, v in grouped(correct, kinds).items() if k is not None},
        }
    return report
