"""SFT example encoding: labels mask the prompt, right padding changes nothing, batch shapes.

Run: HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/unit/test_sft_data.py
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from PIL import Image, ImageDraw

from editr1.models import TinyRRMSpec, tiny_rrm
from editr1.models.tokenizer import IM_END, vision_token_ids
from editr1.rrm.corpus import rrm_corpus
from editr1.rrm.items import Context, Quadruple
from editr1.rrm.principles import Principle
from editr1.rrm.prompt import render_user_text
from editr1.rrm.scoring import encode_quadruples
from editr1.training.data import (
    SFTExample,
    description_tokens,
    encode_sft_batch,
    model_inputs,
    reasoning_end,
    self_feed_mask,
    target_ids,
    PART_CHECK,
    PART_FINDING,
    PART_DESCRIPTION,
    PART_JSON,
    PART_SCORE,
    target_part_ids,
    target_parts,
    target_weights,
    token_counts,
)
from editr1.training.losses import IGNORE_INDEX, sft_token_loss
from editr1.training.forward import packed_loss_weights, packed_target_logits, self_fed

torch.set_num_threads(1)

PRINCIPLES = (
    Principle("Is the circle now blue?", "follow"),
    Principle("Is the rest of the image unchanged?", "keep"),
    Principle("Is the image free of noise?", "quality"),
)


def drawing(colour: tuple[int, int, int], box: tuple[int, int, int, int]) -> Image.Image:
    image = Image.new("RGB", (56, 56), (128, 128, 128))
    ImageDraw.Draw(image).ellipse(box, fill=colour)
    return image


def example(i: int) -> SFTExample:
    instruction = "Make the circle blue." + " Keep the rest." * i  # prompts of different lengths
    context = Context(f"c{i}", instruction, drawing((200, 30, 30), (10, 10, 30 + i, 30 + i)))
    target = f"before: red circle. after: blue circle.{' fine.' * (3 * i)}\n<score>{7 + i}</score>"
    return SFTExample(Quadruple(context, drawing((30, 30, 200), (12, 12, 40, 40)), PRINCIPLES), target)


EXAMPLES = [example(i) for i in range(3)]


@pytest.fixture(scope="module")
def rrm(tmp_path_factory):
    corpus = rrm_corpus([e.target for e in EXAMPLES], [render_user_text(e.quad.instruction, PRINCIPLES) for e in EXAMPLES])
    model, processor = tiny_rrm(corpus * 5, tmp_path_factory.mktemp("rrm"), TinyRRMSpec(seed=3))
    return model.eval(), processor


def test_labels_cover_the_target_and_its_end_token_only(rrm):
    _, processor = rrm
    batch = encode_sft_batch(processor, EXAMPLES)
    prompts = encode_quadruples(processor, [e.quad for e in EXAMPLES])  # what scoring generates from
    tokenizer = processor.tokenizer
    for i, ex in enumerate(EXAMPLES):
        n = int(batch["attention_mask"][i].sum())
        ids, labels = batch["input_ids"][i, :n], batch["labels"][i, :n]
        supervised = labels != IGNORE_INDEX
        expected = target_ids(processor, ex.target)
        # The supervised tokens are one block at the end of the row: the target, then <|im_end|>.
        assert supervised.sum() == len(expected)
        assert supervised[n - len(expected):].all() and not supervised[: n - len(expected)].any()
        assert labels[supervised].tolist() == expected == ids[n - len(expected):].tolist()
        assert tokenizer.decode(expected) == ex.target + IM_END
        # Everything before it is the generation prompt, token for token.
        prompt = prompts["input_ids"][i][prompts["attention_mask"][i].bool()]
        assert ids[: n - len(expected)].tolist() == prompt.tolist()
        assert tokenizer.decode(prompt).endswith("<|im_start|>assistant\n")
        # Padding is never supervised.
        assert (batch["labels"][i, n:] == IGNORE_INDEX).all()


def test_collate_shapes_and_token_types(rrm):
    _, processor = rrm
    batch = encode_sft_batch(processor, EXAMPLES)
    lengths = batch["attention_mask"].sum(1)
    b, length = batch["input_ids"].shape
    assert b == 3 and length == int(lengths.max())
    assert batch["labels"].shape == batch["mm_token_type_ids"].shape == (b, length)
    # Right padding: attention is a run of ones then zeros.
    for i in range(b):
        assert batch["attention_mask"][i, : lengths[i]].all() and not batch["attention_mask"][i, lengths[i]:].any()
    # Two 56x56 images per example: grid (1, 4, 4) each, 16 patches of 3*2*14*14 values, 4 image tokens.
    assert batch["image_grid_thw"].tolist() == [[1, 4, 4]] * 6
    assert batch["pixel_values"].shape == (6 * 16, 3 * 2 * 14 * 14)
    image_tokens = batch["input_ids"] == processor.image_token_id
    assert torch.equal(batch["mm_token_type_ids"].bool(), image_tokens)
    assert image_tokens.sum(1).tolist() == [8, 8, 8]
    counts = token_counts(batch)
    assert counts["total"] == int(lengths.sum()) and counts["padded"] == b * length
    assert counts["target"] == sum(len(target_ids(processor, e.target)) for e in EXAMPLES)
    with pytest.raises(ValueError):
        encode_sft_batch(processor, [])


def test_padded_batch_loss_equals_the_per_example_losses(rrm):
    model, processor = rrm
    batch = encode_sft_batch(processor, EXAMPLES)
    with torch.no_grad():
        logits, labels = packed_target_logits(model, batch)
        batch_loss = sft_token_loss(logits, labels)
        # The packed LM head equals the full forward's loss.
        full = sft_token_loss(model(**model_inputs(batch)).logits, batch["labels"])
        singles = [packed_target_logits(model, encode_sft_batch(processor, [e])) for e in EXAMPLES]
    torch.testing.assert_close(batch_loss, full, rtol=1e-5, atol=1e-6)
    # Token-weighted: the batch loss is the per-example losses weighted by their target tokens.
    sizes = [int((lab != IGNORE_INDEX).sum()) for _, lab in singles]
    per_example = torch.stack([sft_token_loss(lg, lab) for lg, lab in singles])
    weighted = (per_example * torch.tensor(sizes, dtype=per_example.dtype)).sum() / sum(sizes)
    torch.testing.assert_close(batch_loss, weighted, rtol=1e-5, atol=1e-6)
    # Stronger: every supervised logit row of the padded batch equals the unpadded example's.
    torch.testing.assert_close(logits[0, :-1], torch.cat([lg[0, :-1] for lg, _ in singles]), rtol=1e-4, atol=1e-5)
    assert labels[0, 1:].tolist() == [t for _, lab in singles for t in lab[0, 1:].tolist()]


def test_description_weight_falls_on_the_first_line_of_each_judgement(rrm):
    model, processor = rrm
    plain = encode_sft_batch(processor, EXAMPLES)
    assert "loss_weights" not in plain and packed_loss_weights(plain) is None
    batch = encode_sft_batch(processor, EXAMPLES, description_weight=4.0)
    for i, e in enumerate(EXAMPLES):
        ids = target_ids(processor, e.target)
        n = description_tokens(processor, e.target)
        first_line = processor.tokenizer.decode(ids[:n])
        assert first_line.rstrip("\n") == e.target.split("\n")[0] and n < len(ids)
        supervised = batch["labels"][i] != IGNORE_INDEX
        weights = batch["loss_weights"][i][supervised]
        assert weights.tolist() == [4.0] * n + [1.0] * (len(ids) - n)
    # A caption example (one line: nothing but the description) keeps weight 1.
    caption = SFTExample(EXAMPLES[0].quad, "before: red circle. after: blue circle.", "caption")
    assert description_tokens(processor, caption.target) == 0
    assert set(encode_sft_batch(processor, [caption], description_weight=4.0)["loss_weights"][0].tolist()) <= {0.0, 1.0}
    with torch.no_grad():
        logits, labels = packed_target_logits(model, batch)
        w = packed_loss_weights(batch)
        weighted, plain_loss = sft_token_loss(logits, labels, w), sft_token_loss(logits, labels)
    assert w.shape == labels.shape and not torch.isclose(weighted, plain_loss)


JUDGEMENT = ("source: red circle left. edited: red circle left.\n"
             "1. circle colour: red. no\n"
             "2) vs source: same - no\n"
             "3. noise: none. yes\n"
             "[{\"question\": \"Is the circle now blue?\", \"score\": 0}]\n"
             "{\"average_score\": 0.33}\n<score>2</score>")


def test_target_parts_find_the_description_and_each_verdict():
    parts = target_parts(JUDGEMENT)
    text = {part: [JUDGEMENT[a:b] for a, b in spans] for part, spans in parts.items()}
    assert text[PART_DESCRIPTION] == ["source: red circle left. edited: red circle left.\n"]
    # The check lines' last words, in two of the teacher's phrasings; the JSON list's 0|1; the score.
    assert text[PART_CHECK] == ["no", "no", "yes"] and text[PART_JSON] == ["0"] and text[PART_SCORE] == ["2"]
    assert parts[PART_CHECK][0][0] == JUDGEMENT.index("red. no") + len("red. ")
    # What each check line found: between its first ": " and its verdict.
    assert text[PART_FINDING] == ["red. ", "same - ", "none. "]
    assert parts[PART_JSON][0][0] == JUDGEMENT.index('"score": 0') + len('"score": ')
    assert target_parts("<score>7.5</score>")[PART_SCORE] == [(7, 10)]
    assert not any(target_parts("a plain caption").values())


def test_verdict_weight_falls_on_the_tokens_that_hold_a_verdict(rrm):
    _, processor = rrm
    ids, weights = target_weights(processor, JUDGEMENT, description_weight=2.0, verdict_weight=5.0)
    assert ids == target_ids(processor, JUDGEMENT) and len(weights) == len(ids)
    heavy = [processor.tokenizer.decode([i]) for i, w in zip(ids, weights) if w == 5.0]
    assert len(heavy) == 5 and [t.strip().split()[-1] for t in heavy[:3]] == ["no", "no", "yes"]
    assert [t.strip() for t in heavy[3:]] == ["0", "2"]
    ids_again, parts = target_part_ids(processor, JUDGEMENT)
    assert ids_again == ids and [p for p in parts if p >= PART_CHECK] == [PART_CHECK] * 3 + [PART_JSON, PART_SCORE]
    n = description_tokens(processor, JUDGEMENT)
    assert weights[:n] == [2.0] * n and set(weights[n:]) == {1.0, 5.0}
    # The findings get their own weight; a token over a finding and its verdict counts as the verdict.
    _, with_findings = target_weights(processor, JUDGEMENT, verdict_weight=5.0, finding_weight=3.0)
    found = processor.tokenizer.decode([i for i, w in zip(ids, with_findings) if w == 3.0])
    assert "red" in found and "same" in found and "none" in found and "circle" not in found and "yes" not in found
    assert [w for w in with_findings if w != 3.0 and w != 1.0] == [5.0] * 5
    assert PART_FINDING in parts
    # In a batch: the same weights on the supervised tokens; verdict weighting alone switches weights on.
    batch = encode_sft_batch(processor, [SFTExample(EXAMPLES[0].quad, JUDGEMENT)], verdict_weight=5.0)
    supervised = batch["labels"][0] != IGNORE_INDEX
    assert batch["loss_weights"][0][supervised].tolist() == [5.0 if w == 5.0 else 1.0 for w in weights]


def test_self_feed_mask_marks_the_reasoning_but_not_its_verdicts(rrm):
    _, processor = rrm
    ids = target_ids(processor, JUDGEMENT)
    mask = self_feed_mask(processor, JUDGEMENT)
    assert len(mask) == len(ids) and reasoning_end(JUDGEMENT) == JUDGEMENT.index("[")
    fed = processor.tokenizer.decode([i for i, m in zip(ids, mask) if m])
    kept = processor.tokenizer.decode([i for i, m in zip(ids, mask) if not m])
    assert fed.startswith("source: red circle left") and "noise: none" in fed
    assert "question" not in fed and "score" not in fed and "yes" not in fed
    words = kept.split()  # the check lines' verdicts stay the teacher's, then the JSON list
    assert words[:2] == ["no", "no"] and words[2].startswith("yes") and kept.endswith("</score>" + IM_END)
    assert reasoning_end("a plain caption") == 0 and not any(self_feed_mask(processor, "a plain caption"))
    batch = encode_sft_batch(processor, [SFTExample(EXAMPLES[0].quad, JUDGEMENT), EXAMPLES[1]], self_feed=True)
    row = batch["self_feed_mask"][0]
    assert int(row.sum()) == sum(mask) and bool((batch["labels"][0][row] != IGNORE_INDEX).all())
    assert "self_feed_mask" not in encode_sft_batch(processor, EXAMPLES)


def test_self_fed_replaces_only_marked_inputs_with_the_models_own_tokens(rrm):
    model, processor = rrm
    batch = encode_sft_batch(processor, [SFTExample(EXAMPLES[i].quad, JUDGEMENT) for i in range(2)], self_feed=True)
    banned = sorted(set(vision_token_ids(processor.tokenizer)) | set(processor.tokenizer.all_special_ids))
    assert self_fed(model, batch, 0.0, torch.Generator().manual_seed(0), banned) is batch
    fed = self_fed(model, batch, 1.0, torch.Generator().manual_seed(0), banned)
    changed = fed["input_ids"] != batch["input_ids"]
    assert bool(changed.any()) and not bool((changed & ~batch["self_feed_mask"]).any())
    assert torch.equal(fed["labels"], batch["labels"]) and torch.equal(fed["pixel_values"], batch["pixel_values"])
    assert not set(fed["input_ids"][batch["self_feed_mask"]].tolist()) & set(banned)
    again = self_fed(model, batch, 1.0, torch.Generator().manual_seed(0), banned)
    assert torch.equal(again["input_ids"], fed["input_ids"])  # the generator decides every draw
    # The untrained model's draws are its own predictions: a forward on them still runs and gives a loss.
    logits, labels = packed_target_logits(model, fed)
    assert torch.isfinite(sft_token_loss(logits, labels))


def test_target_cache_gives_the_same_batches_and_keys_on_the_weights(rrm):
    _, processor = rrm
    caption = SFTExample(EXAMPLES[0].quad, "before: red circle. after: blue circle.", "caption")
    examples = [*EXAMPLES, caption]
    cache: dict = {}
    for weights in ({}, {"verdict_weight": 5.0, "description_weight": 2.0}):
        plain = encode_sft_batch(processor, examples, **weights)
        first = encode_sft_batch(processor, examples, **weights, target_cache=cache)
        again = encode_sft_batch(processor, examples, **weights, target_cache=cache)
        for batch in (first, again):
            assert set(batch) == set(plain)
            for key in plain:
                assert torch.equal(batch[key], plain[key]), key
    # one entry per (target, weighting): the weighted judgements do not reuse the unweighted ones
    assert len(cache) == len({e.target for e in examples}) + len({e.target for e in EXAMPLES})
    # a hit is what is used: a changed entry changes the batch
    key = (caption.target,)
    ids, w = cache[key]
    cache[key] = (ids[:-1], w[:-1])
    assert not torch.equal(encode_sft_batch(processor, [caption], target_cache=cache)["input_ids"],
                           encode_sft_batch(processor, [caption])["input_ids"])
