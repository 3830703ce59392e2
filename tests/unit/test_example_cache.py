"""`editr1.training.example_cache`: SFT examples encoded once, with the frozen tower's image features
in place of pixels, give the batches and the losses that encoding them afresh gives."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from PIL import Image, ImageDraw

from editr1.models import TinyRRMSpec, tiny_rrm
from editr1.rrm.corpus import rrm_corpus
from editr1.rrm.items import Context, Quadruple
from editr1.rrm.principles import Principle
from editr1.rrm.prompt import render_user_text
from editr1.training.data import SFTExample, caption_examples, encode_sft_batch
from editr1.training.example_cache import EncodedExamples, image_features
from editr1.training.forward import packed_loss_weights, packed_target_logits
from editr1.training.losses import sft_token_loss
from editr1.training.sft_config import SFTConfig

torch.set_num_threads(1)

PRINCIPLES = (Principle("Is the square now green?", "follow"), Principle("Is the background unchanged?", "keep"))
WEIGHTS = {"verdict_weight": 5.0, "description_weight": 2.0}


def image(colour: tuple[int, int, int], corner: int) -> Image.Image:
    out = Image.new("RGB", (56, 56), (90, 90, 90))
    ImageDraw.Draw(out).rectangle((corner, corner, corner + 20, corner + 20), fill=colour)
    return out


def example(i: int) -> SFTExample:
    context = Context(f"c{i}", "Make the square green." + " Only the square." * (i % 3),
                      image((30 * i % 255, 40, 200), 4 + 3 * i))
    target = (f"square: blue → green{', kept' * i}.\n1. colour: green. yes\n2. background: same. "
              f"{'yes' if i % 2 else 'no'}\n<score>{i % 10}</score>")
    return SFTExample(Quadruple(context, image((40, 200, 40), 4 + 3 * i), PRINCIPLES), target)


EXAMPLES = [example(i) for i in range(5)]


@pytest.fixture(scope="module")
def rrm(tmp_path_factory):
    corpus = rrm_corpus([e.target for e in EXAMPLES], [render_user_text(e.quad.instruction, PRINCIPLES) for e in EXAMPLES])
    model, processor = tiny_rrm(corpus * 5, tmp_path_factory.mktemp("rrm"), TinyRRMSpec(seed=5))
    return model.eval(), processor


def loss(model, batch) -> float:
    with torch.no_grad():
        logits, labels = packed_target_logits(model, batch)
        return float(sft_token_loss(logits, labels, packed_loss_weights(batch)))


@pytest.mark.parametrize("captions", [False, True])
def test_a_kept_batch_is_the_fresh_batch_with_image_features_for_pixels(rrm, captions):
    model, processor = rrm
    examples = caption_examples(EXAMPLES) if captions else EXAMPLES
    weights = {} if captions else WEIGHTS
    cache = EncodedExamples(processor, examples, model, chunk=2, **weights)
    order = [4, 0, 3]
    kept = cache.batch(order)
    fresh = encode_sft_batch(processor, [examples[i] for i in order], **weights)
    assert set(kept) == set(fresh) - {"pixel_values"} | {"image_features"}
    for key in set(fresh) - {"pixel_values"}:
        assert torch.equal(kept[key], fresh[key]), key
    torch.testing.assert_close(kept["image_features"], image_features(model, fresh), rtol=1e-5, atol=1e-6)
    # the decoder reads the kept features where it would have run the tower: the same loss
    assert loss(model, kept) == pytest.approx(loss(model, fresh), rel=1e-5)


def test_each_chunk_is_encoded_once_and_features_do_not_depend_on_who_asked_first(rrm):
    model, processor = rrm
    one = EncodedExamples(processor, EXAMPLES, model, chunk=2, **WEIGHTS)
    one.batch([3])
    assert len(one) == 2  # examples 2 and 3: the chunk of 3
    one.batch([2, 3, 0])
    assert len(one) == 4
    other = EncodedExamples(processor, EXAMPLES, model, chunk=2, **WEIGHTS)
    for i in (0, 1, 2, 3, 4):
        other.batch([i])
    for i in range(4):
        assert torch.equal(one.example(i).image_features, other.example(i).image_features)
        assert torch.equal(one.example(i).rows["input_ids"], other.example(i).rows["input_ids"])
    with pytest.raises(IndexError):
        one.example(len(EXAMPLES))
    with pytest.raises(ValueError, match="no examples"):
        one.batch([])


def test_kept_encodings_need_a_tower_frozen_throughout():
    SFTConfig(freeze_vision=True, vision_pretrain_steps=10, cache_encoded=True)
    for settings in ({"freeze_vision": False}, {"freeze_vision": True, "unfreeze_vision_step": 100}):
        with pytest.raises(ValueError, match="cache_encoded needs freeze_vision"):
            SFTConfig(cache_encoded=True, vision_pretrain_steps=10, **settings)
