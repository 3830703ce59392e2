"""`editr1.training.forward`: the batch's shared opening run once (`decoder_hidden`) and compiled
decoder layers (`compile_decoder`) give the hidden states, the SFT loss and the gradients of one
eager pass over the whole batch."""

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
from editr1.training.data import SFTExample, caption_examples, encode_sft_batch, model_inputs
from editr1.training.example_cache import EncodedExamples
from editr1.training.forward import (compile_decoder, decoder_hidden, packed_loss_weights, packed_target_logits,
                                     shared_prefix_length)
from editr1.training.losses import sft_token_loss

torch.set_num_threads(1)

PRINCIPLES = (Principle("Is the circle now red?", "follow"), Principle("Are the other shapes unchanged?", "keep"))


def image(colour: tuple[int, int, int], corner: int) -> Image.Image:
    out = Image.new("RGB", (56, 56), (60, 60, 60))
    ImageDraw.Draw(out).ellipse((corner, corner, corner + 18, corner + 18), fill=colour)
    return out


def example(i: int) -> SFTExample:
    instruction = "Make the circle red." + " Keep the rest." * (i % 3)
    context = Context(f"c{i}", instruction, image((20 * i, 90, 200), 3 + 4 * i))
    target = (f"circle: blue → red{', kept' * (i % 4)}.\n1. colour: red. yes\n2. other shapes: same. "
              f"{'no' if i % 2 else 'yes'}\n<score>{(3 * i) % 10}</score>")
    return SFTExample(Quadruple(context, image((200, 30, 30), 3 + 4 * i), PRINCIPLES), target)


EXAMPLES = [example(i) for i in range(4)]


@pytest.fixture(scope="module")
def rrm(tmp_path_factory):
    prompts = [render_user_text(e.quad.instruction, PRINCIPLES) for e in EXAMPLES]
    corpus = rrm_corpus([e.target for e in EXAMPLES], prompts)
    model, processor = tiny_rrm(corpus * 5, tmp_path_factory.mktemp("rrm"), TinyRRMSpec(seed=3))
    return model, processor


def whole(model, batch):
    return model.model(**model_inputs(batch), use_cache=False).last_hidden_state


def test_the_shared_opening_stops_at_padding_a_differing_token_or_an_image():
    ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, 3, 9]])
    assert shared_prefix_length(ids, torch.ones_like(ids)) == 3
    assert shared_prefix_length(ids, torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])) == 2
    assert shared_prefix_length(ids, torch.ones_like(ids), torch.tensor([[0, 1, 0, 0, 0]] * 2)) == 1
    assert shared_prefix_length(ids[:, :3], torch.ones(2, 3, dtype=torch.long)) == 3


@pytest.mark.parametrize("kept", [False, True])
@pytest.mark.parametrize("captions", [False, True])
def test_hidden_states_loss_and_gradients_equal_one_pass_over_the_batch(rrm, kept, captions):
    model, processor = rrm
    examples = caption_examples(EXAMPLES) if captions else EXAMPLES
    weights = {} if captions else {"verdict_weight": 5.0}
    batch = (EncodedExamples(processor, examples, model, **weights).batch([2, 0, 3]) if kept
             else encode_sft_batch(processor, [examples[i] for i in (2, 0, 3)], **weights))
    shared = shared_prefix_length(batch["input_ids"], batch["attention_mask"], batch["mm_token_type_ids"])
    assert shared >= 8  # the system prompt and the user turn up to the first image
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(decoder_hidden(model, batch)[real], whole(model, batch)[real], rtol=1e-5, atol=1e-5)

    def loss_and_grads(forward_whole: bool):
        model.zero_grad(set_to_none=True)
        if forward_whole:
            hidden = whole(model, batch)
            predicts = batch["labels"][:, 1:] != -100
            logits = model.get_output_embeddings()(hidden[:, :-1][predicts])
            labels = batch["labels"][:, 1:][predicts]
            w = packed_loss_weights(batch)
            w = w[0, 1:] if w is not None else torch.ones_like(labels, dtype=torch.float32)
            token = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
            loss = (token * w).sum() / w.sum()
        else:
            logits, labels = packed_target_logits(model, batch)
            loss = sft_token_loss(logits, labels, packed_loss_weights(batch))
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return float(loss.detach()), grads

    base_loss, base_grads = loss_and_grads(True)
    loss, grads = loss_and_grads(False)
    assert loss == pytest.approx(base_loss, rel=1e-5)
    assert grads.keys() == base_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, base_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_single_row_or_no_shared_opening_runs_the_plain_pass(rrm):
    model, processor = rrm
    batch = encode_sft_batch(processor, EXAMPLES[:1])
    assert torch.equal(decoder_hidden(model, batch), whole(model, batch))


def test_compiled_decoder_layers_give_the_eager_loss_and_gradients(rrm):
    import copy

    model, processor = rrm
    compiled = copy.deepcopy(model)
    assert compile_decoder(compiled) == len(model.model.language_model.layers)
    assert compiled.state_dict().keys() == model.state_dict().keys()  # saved models are unchanged
    batches = [encode_sft_batch(processor, EXAMPLES[:3], verdict_weight=5.0), encode_sft_batch(processor, EXAMPLES[1:])]
    for batch in batches:  # two shapes: the second reuses the dynamic kernels
        results = []
        for m in (model, compiled):
            m.zero_grad(set_to_none=True)
            logits, labels = packed_target_logits(m, batch)
            loss = sft_token_loss(logits, labels, packed_loss_weights(batch))
            loss.backward()
            results.append((float(loss.detach()), {n: p.grad for n, p in m.named_parameters() if p.grad is not None}))
        (eager_loss, eager_grads), (loss, grads) = results
        assert loss == pytest.approx(eager_loss, rel=1e-5)
        for name, grad in grads.items():
            torch.testing.assert_close(grad, eager_grads[name], rtol=1e-3, atol=1e-5, msg=name)
