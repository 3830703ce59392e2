"""SFT's teacher-forced val metrics: loss and per-part token accuracy of the judgements.

    marks = val_marks(processor, examples)            # once per run
    metrics = teacher_forced(model, processor, examples, marks, batch_size=32)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from editr1.models.processor import RRMProcessor
from editr1.models.tokenizer import IM_END
from editr1.training.data import (PART_CHECK, PART_DESCRIPTION, PART_FINDING, PART_JSON, PART_SCORE, SFTExample,
                                  encode_sft_batch, target_part_ids)
from editr1.training.forward import packed_target_logits
from editr1.training.losses import IGNORE_INDEX, sft_token_loss

SAYS_NO = re.compile(r"\bno\W*$")
PART_NAMES = {PART_DESCRIPTION: "description", PART_FINDING: "finding", PART_CHECK: "check", PART_JSON: "json",
              PART_SCORE: "score"}


def val_marks(processor: RRMProcessor, examples: Sequence[SFTExample]) -> list[list[tuple[str | None, bool]]]:
    """Per example, per target token: the name of the judgement part it holds (None for the rest) and
    whether it is a check verdict or finding of a check line that says no."""
    out = []
    for ex in examples:
        _, parts = target_part_ids(processor, ex.target)
        offsets = processor.tokenizer(ex.target + IM_END, add_special_tokens=False,
                                      return_offsets_mapping=True)["offset_mapping"]
        marks = []
        for (start, _), part in zip(offsets, parts, strict=True):
            line_end = ex.target.find("\n", start)
            line = ex.target[ex.target.rfind("\n", 0, start) + 1: len(ex.target) if line_end < 0 else line_end]
            marks.append((PART_NAMES.get(part), part in (PART_CHECK, PART_FINDING) and bool(SAYS_NO.search(line))))
        out.append(marks)
    return out


@torch.no_grad()
def teacher_forced(model: torch.nn.Module, processor: RRMProcessor, examples: Sequence[SFTExample],
                   marks: Sequence[list[tuple[str | None, bool]]], batch_size: int,
                   target_cache: dict | None = None) -> dict[str, float]:
    """Teacher-forced on ``examples`` (``marks`` from `val_marks`): ``val_loss`` (token-weighted) and the
    share of target tokens predicted exactly (argmax) per part of the judgement — ``val_description_acc``,
    ``val_check_acc`` (the checks' yes/no), ``val_check_no_acc`` (those that say no: most say yes, so a
    model that answers yes to all scores well on the first and 0 here), ``val_finding_acc`` /
    ``val_finding_no_acc`` (what the check lines found — all of them / of the lines that say no: the
    words a generated check must get right before its verdict), ``val_json_acc`` (the JSON list's 0|1)
    and ``val_score_acc`` (the final score). Empty without examples."""
    if not examples:
        return {}
    total, count = 0.0, 0
    right: dict[str, list[int]] = {k: [0, 0] for k in (*PART_NAMES.values(), "finding_no", "check_no")}
    for start in range(0, len(examples), batch_size):
        batch = encode_sft_batch(processor, list(examples[start:start + batch_size]), target_cache=target_cache)
        logits, labels = packed_target_logits(model, batch)
        n = int((labels != IGNORE_INDEX).sum())
        total += float(sft_token_loss(logits, labels)) * n
        count += n
        # Packed: the targets of the examples one after another, each predicted one position earlier.
        hits = (logits[0, :-1].argmax(-1) == labels[0, 1:]).tolist()
        flat = [m for ex_marks in marks[start:start + batch_size] for m in ex_marks]
        for (name, says_no), hit in zip(flat, hits, strict=True):
            if name is not None:
                right[name][0] += hit
                right[name][1] += 1
            if says_no:
                right[f"{name}_no"][0] += hit
                right[f"{name}_no"][1] += 1
    out = {"val_loss": total / count}
    out.update({f"val_{k}_acc": hit / n for k, (hit, n) in right.items() if n})
    return out
