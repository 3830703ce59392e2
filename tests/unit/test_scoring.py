"""Tests of editr1.rrm.scoring: the expected-score math by hand, then `score` end to end on a tiny RRM
trained for a few seconds to write "... <score>7</score>".

Run: HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/unit/test_scoring.py
"""

from __future__ import annotations

import copy
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from PIL import Image, ImageDraw
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from editr1.models import SPECIAL_TOKENS, TinyRRMSpec, completion_batch, encode_batch, generate, generate_ids, tiny_rrm
from editr1.rrm.items import Context, Quadruple
from editr1.rrm.parser import parse_output
from editr1.rrm.principles import Principle
from editr1.rrm.prompt import SYSTEM_PROMPT, render_messages, render_user_text
from editr1.rrm.scoring import (
    Scored,
    ScoredSample,
    encode_quadruples,
    expected_from_logits,
    expected_scores,
    last_token_positions,
    parse_rate,
    rewards,
    score,
    score_vocabulary,
)

torch.set_num_threads(1)

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 180, 30)}
PRINCIPLES = (
    Principle("Is the shape now the requested colour?", "follow"),
    Principle("Is the rest of the image unchanged?", "keep"),
    Principle("Is the edit clean?", "quality"),
)
TARGET = "before: red circle. after: blue circle. follow: yes. keep: yes. <score>7</score>"


def drawing(colour: str, shape: str) -> Image.Image:
    image = Image.new("RGB", (56, 56), (240, 240, 240))
    draw = ImageDraw.Draw(image)
    box = [12, 12, 44, 44]
    if shape == "circle":
        draw.ellipse(box, fill=COLOURS[colour])
    else:
        draw.rectangle(box, fill=COLOURS[colour])
    return image


def quadruple(i: int) -> Quadruple:
    shape = ("circle", "square")[i % 2]
    before, after = [("red", "blue"), ("green", "red"), ("blue", "green")][i % 3]
    instruction = f"Make the {shape} {after}." + " Keep everything else." * (i % 3)  # lengths differ: left padding
    context = Context(f"c{i}", instruction, drawing(before, shape))
    return Quadruple(context, drawing(after, shape), PRINCIPLES)


QUADS = [quadruple(i) for i in range(5)]


def train_to_write(model, processor, quads, target: str, steps: int) -> None:
    """Supervised steps on the completion tokens of ``target`` after each quadruple's prompt."""
    prompts = encode_quadruples(processor, quads)
    messages = [
        render_messages(q.instruction, q.principles, q.source, q.edited) + [{"role": "assistant", "content": target}]
        for q in quads
    ]
    batch = encode_batch(processor, messages, [[q.source, q.edited] for q in quads], add_generation_prompt=False)
    # Left padding puts each completion at the right end: its length is full length minus prompt length.
    n_completion = batch["attention_mask"].sum(1) - prompts["attention_mask"].sum(1)
    length = batch["input_ids"].shape[1]
    is_completion = torch.arange(length)[None, :] >= (length - n_completion)[:, None]
    labels = batch["input_ids"].masked_fill(~is_completion, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch, labels=labels).loss.backward()
        optimizer.step()


@pytest.fixture(scope="module")
def rrm(tmp_path_factory):
    """A tiny RRM (in train mode) that writes TARGET for any quadruple."""
    corpus = [SYSTEM_PROMPT, render_user_text("Make the circle blue.", PRINCIPLES), "Source image: Edited image:"]
    corpus += [TARGET.replace("7", str(k)) for k in range(11)]
    model, processor = tiny_rrm(corpus * 20, tmp_path_factory.mktemp("rrm"), TinyRRMSpec())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        # Short rounds until it writes TARGET: one long run at lr 1e-2 can oscillate on some CPUs.
        for _ in range(12):
            train_to_write(model, processor, QUADS, TARGET, steps=20)
            model.eval()
            done = generate(model, processor, encode_quadruples(processor, QUADS), 40) == [TARGET] * len(QUADS)
            model.train()
            if done:
                break
    return model, processor


# --- pure math, by hand -------------------------------------------------------------------------


def test_expected_from_logits_by_hand():
    # Vocabulary of 6; scores 0, 1, 2 are tokens 3, 1, 4. Their logits 0, ln 2, ln 5 give
    # p = (1/8, 2/8, 5/8), so E = 0·1/8 + 1·2/8 + 2·5/8 = 12/8. Other tokens (huge logits) do not count.
    row = torch.tensor([100.0, math.log(2), 50.0, 0.0, math.log(5), 80.0])
    uniform = torch.tensor([9.0, 1.0, 9.0, 1.0, 1.0, 9.0])  # equal score logits: E = (0 + 1 + 2) / 3
    logits = torch.stack([row, uniform])
    torch.testing.assert_close(expected_from_logits(logits, [3, 1, 4]), torch.tensor([1.5, 1.0]))
    # Values other than 0..K-1: 0·1/8 + 5·2/8 + 10·5/8 = 60/8.
    torch.testing.assert_close(expected_from_logits(row, [3, 1, 4], [0.0, 5.0, 10.0]), torch.tensor(7.5))
    # bf16 logits are read in float32.
    out = expected_from_logits(logits.bfloat16(), [3, 1, 4])
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([1.5, 1.0]), atol=1e-2, rtol=0)
    with pytest.raises(ValueError, match="values"):
        expected_from_logits(row, [3, 1, 4], [0.0, 1.0])


def test_last_token_positions_reads_the_last_generated_tag():
    ids = torch.tensor([[5, 9, 5, 2, 0], [1, 2, 3, 4, 0], [9, 9, 9, 5, 5], [5, 1, 1, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    # row 0: last 5 at step 2; row 1: none; row 2: the 5 at step 4 is after the stop (masked) → 3; row 3: step 0.
    assert last_token_positions(ids, mask, 5).tolist() == [2, -1, 3, 0]


def test_score_vocabulary_uses_the_single_token_scores_only():
    # Digits one per token as in a hub Qwen tokenizer before add_score_tokens: "10" is two tokens.
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(["score 10 of 10, 7 and 3"] * 20, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids, values = score_vocabulary(tokenizer)
    assert values == [float(v) for v in range(10)]
    assert [tokenizer.decode([i]) for i in ids] == [str(v) for v in range(10)]


def test_rewards_and_parse_rate_on_hand_made_verdicts():
    good, bad = parse_output("ok <score>8</score>"), parse_output("no tag")
    a = Scored((ScoredSample("ok <score>8</score>", good, 8.0, 7.5),), "expected", 7.5, True, good)
    b = Scored((ScoredSample("no tag", bad, None, None),) * 2, "parsed", None, False, bad)
    assert rewards([a, b]) == [7.5, 0.0]
    assert rewards([a, b], fallback=-1) == [7.5, -1.0]
    assert parse_rate([a, b]) == pytest.approx(1 / 3)  # per generated output: 1 of 3
    assert a.text == "ok <score>8</score>"
    with pytest.raises(ValueError):
        parse_rate([])


# --- end to end on the tiny RRM -----------------------------------------------------------------


def test_both_readouts_come_out_near_7(rrm):
    model, processor = rrm
    model.train()
    scored = score(model, processor, QUADS, max_new_tokens=40)
    assert model.training  # mode given back
    assert len(scored) == len(QUADS)
    for s in scored:
        assert s.readout == "expected" and s.parse_ok and len(s.samples) == 1
        assert s.text.endswith("<score>7</score>")
        assert s.samples[0].parsed == 7.0
        assert s.score == s.samples[0].expected == pytest.approx(7.0, abs=0.3)
        assert s.judgement.score == 7.0
    parsed = score(model, processor, QUADS[:2], readout="parsed", max_new_tokens=40)
    assert [s.score for s in parsed] == [7.0, 7.0]
    assert all(s.samples[0].expected is None for s in parsed)  # not computed for the parsed readout
    assert parse_rate(scored) == 1.0


def test_expected_readout_matches_the_full_logits_at_the_score_tag(rrm):
    model, processor = rrm
    model.eval()
    batch = encode_quadruples(processor, QUADS[:3])
    generation = generate_ids(model, processor, batch, 40)
    readout = expected_scores(model, processor, batch, generation)
    with torch.no_grad():
        logits = model(**completion_batch(processor, batch, generation)).logits
    open_id = processor.tokenizer.convert_tokens_to_ids("<score>")
    prompt_length = batch["input_ids"].shape[1]
    ids, values = score_vocabulary(processor.tokenizer)
    for row in range(3):
        step = generation.completion_ids[row].tolist().index(open_id)
        by_hand = expected_from_logits(logits[row, prompt_length + step], ids, values).item()
        assert readout[row] == pytest.approx(by_hand, abs=1e-5)


def test_output_truncated_right_after_the_score_tag_still_gets_an_expected_score(rrm):
    model, processor = rrm
    model.eval()
    generation = generate_ids(model, processor, encode_quadruples(processor, QUADS[:1]), 40)
    steps_to_tag = generation.completion_ids[0].tolist().index(processor.tokenizer.convert_tokens_to_ids("<score>"))
    (scored,) = score(model, processor, QUADS[:1], max_new_tokens=steps_to_tag + 1)
    assert scored.text.endswith("<score>")
    assert not scored.parse_ok and scored.judgement.error == "unclosed_score_tag"
    assert scored.samples[0].parsed is None
    assert scored.score == pytest.approx(7.0, abs=0.3)


def test_n_samples_gives_that_many_reproducible_samples_and_keeps_the_global_rng(rrm):
    model, processor = rrm
    state = torch.get_rng_state()
    first = score(model, processor, QUADS[:2], n_samples=3, temperature=1.0, seed=0, max_new_tokens=40)
    assert torch.equal(torch.get_rng_state(), state)
    again = score(model, processor, QUADS[:2], n_samples=3, temperature=1.0, seed=0, max_new_tokens=40)
    assert [len(s.samples) for s in first] == [3, 3]
    assert [[x.text for x in s.samples] for s in first] == [[x.text for x in s.samples] for s in again]
    for s in first:
        present = [x.expected for x in s.samples if x.expected is not None]
        assert s.score == pytest.approx(sum(present) / len(present))
    with pytest.raises(ValueError, match="greedy"):
        score(model, processor, QUADS[:2], n_samples=3, temperature=0.0)
    with pytest.raises(ValueError, match="readout"):
        score(model, processor, QUADS[:2], readout="mean")


def test_small_batches_give_the_same_results_as_one_batch(rrm):
    model, processor = rrm
    one = score(model, processor, QUADS, batch_size=16, max_new_tokens=40)
    chunked = score(model, processor, QUADS, batch_size=2, max_new_tokens=40)
    assert [s.text for s in chunked] == [s.text for s in one]
    assert [s.score for s in chunked] == pytest.approx([s.score for s in one], abs=1e-4)


def test_parse_failures_score_none_and_rewards_fall_back(rrm):
    model, processor = rrm
    for readout in ("parsed", "expected"):
        scored = score(model, processor, QUADS[:2], readout=readout, max_new_tokens=3)  # stops before <score>
        assert all(not s.parse_ok and s.score is None for s in scored)
        assert all(s.judgement.error == "no_score_tag" for s in scored)
        assert rewards(scored, fallback=-1.0) == [-1.0, -1.0]
        assert parse_rate(scored) == 0.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_score_on_cuda_matches_cpu(rrm):
    model, processor = rrm
    on_cpu = score(model, processor, QUADS[:3], max_new_tokens=40)
    on_gpu = score(copy.deepcopy(model).to("cuda"), processor, QUADS[:3], max_new_tokens=40)
    assert [s.text for s in on_gpu] == [s.text for s in on_cpu]
    assert [s.score for s in on_gpu] == pytest.approx([s.score for s in on_cpu], abs=1e-3)
