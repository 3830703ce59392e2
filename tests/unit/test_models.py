"""Tests of editr1.models: tokenizer, processor, tiny RRM build/save/load, generation.

Run: HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/unit/test_models.py -s   (-s prints timings)
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import random
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from editr1.models import (
    SPECIAL_TOKENS,
    VISION_TOKENS,
    TinyRRMSpec,
    add_score_tokens,
    build_processor,
    build_tiny_rrm,
    completion_batch,
    encode_batch,
    generate,
    generate_ids,
    load_processor,
    load_rrm,
    render_chat,
    repeat_batch,
    save_processor,
    save_rrm,
    score_token_ids,
    tiny_rrm,
    train_tokenizer,
    vision_token_ids,
)

torch.set_num_threads(1)

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 180, 30), "purple": (140, 40, 160)}
SHAPES = ["circle", "square", "triangle"]
PLACES = ["top left", "top right", "bottom left", "bottom right", "center"]
VISION_BLOCK = "<|vision_start|><|image_pad|><|vision_end|>"


def synthetic_corpus(n: int = 400, seed: int = 0) -> list[str]:
    """RRM-like reasoning lines plus pseudo-words, so BPE fills the default 2000-token vocabulary."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        shape, place = rng.choice(SHAPES), rng.choice(PLACES)
        before, after = rng.sample(sorted(COLOURS), 2)
        lines.append(
            f"Make the {shape} {after}. before: {before} {shape} {place}. after: {after} {shape} {place}. "
            f"follow: requested {after}, got {after}: yes. keep: yes. changed: yes. quality: good. "
            f"<score>{rng.randint(0, 10)}</score>"
        )
        syllables = ["ka", "lo", "mi", "tren", "sor", "vu", "pel", "dax", "qui", "zen", "bo", "rag"]
        lines.append(" ".join("".join(rng.choices(syllables, k=rng.randint(2, 4))) for _ in range(12)))
    return lines


def image(colour: str, size: int = 56) -> Image.Image:
    return Image.new("RGB", (size, size), COLOURS[colour])


def conversation(instruction: str, n_images: int = 2, answer: str | None = None) -> list[dict]:
    content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": instruction}]
    messages = [{"role": "user", "content": content}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


PROMPTS = ["Blue?", "Make the circle in the top left blue and keep the rest.", "Make it red."]
PAIRS = [("red", "blue"), ("green", "purple"), ("blue", "red")]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerFast:
    return train_tokenizer(synthetic_corpus(), 2000, tmp_path_factory.mktemp("tok"))


@pytest.fixture
def rrm(tokenizer):
    spec = TinyRRMSpec()
    return build_tiny_rrm(spec, tokenizer), build_processor(tokenizer, spec)


def prompt_batch(processor, n: int = 3):
    messages = [conversation(PROMPTS[i % 3]) for i in range(n)]
    images = [[image(a), image(b)] for a, b in (PAIRS[i % 3] for i in range(n))]
    return encode_batch(processor, messages, images)


def test_score_tokens_are_single_tokens(tokenizer):
    ids = score_token_ids(tokenizer)
    assert len(set(ids)) == 11
    assert [tokenizer.decode([i]) for i in ids] == [str(v) for v in range(11)]
    tokens = tokenizer.convert_ids_to_tokens(tokenizer.encode("<score>7</score>", add_special_tokens=False))
    assert tokens == ["<score>", "7", "</score>"]
    assert tokenizer.encode("<score>10</score>", add_special_tokens=False)[1] == ids[10]
    text = "quality: good. <score>9</score>"
    assert tokenizer.decode(tokenizer.encode(text), skip_special_tokens=True) == text
    assert len(tokenizer) == 2000


def test_chat_template_renders_images_as_vision_tokens(tokenizer, tmp_path):
    prompt = tokenizer.apply_chat_template(conversation("Make it blue."), tokenize=False, add_generation_prompt=True)
    assert prompt.count(VISION_BLOCK) == 2
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    finished = tokenizer.apply_chat_template(conversation("Make it blue.", answer="<score>9</score>"), tokenize=False)
    assert finished.endswith("<|im_start|>assistant\n<score>9</score><|im_end|>\n")
    ids = tokenizer.encode(prompt)
    for token in SPECIAL_TOKENS[1:6]:
        assert tokenizer.convert_tokens_to_ids(token) in ids
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.padding_side == "left"


def test_processor_gives_four_tokens_per_56px_image(rrm):
    _, processor = rrm
    batch = prompt_batch(processor, n=2)
    pad = processor.image_token_id
    assert (batch["input_ids"] == pad).sum(dim=1).tolist() == [8, 8]
    assert batch["image_grid_thw"].tolist() == [[1, 4, 4]] * 4
    assert batch["pixel_values"].shape == (4 * 16, 3 * 2 * 14 * 14)
    assert (batch["mm_token_type_ids"] == 1).sum().item() == 16
    large = encode_batch(processor, [conversation("x", 1)], [[image("red", 120)]])
    assert (large["input_ids"] == pad).sum().item() == 4  # max_pixels caps every image at 4 tokens
    with pytest.raises(ValueError, match="image items"):
        encode_batch(processor, [conversation("x", 2)], [[image("red")]])


def test_processor_save_load_roundtrip(rrm, tmp_path):
    _, processor = rrm
    save_processor(processor, tmp_path)
    loaded = load_processor(tmp_path)
    assert loaded.tokenizer.padding_side == "left"
    assert render_chat(loaded, conversation("hi")) == render_chat(processor, conversation("hi"))
    a, b = prompt_batch(processor), prompt_batch(loaded)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_train_step_changes_text_and_vision_parameters(rrm):
    model, processor = rrm
    answers = [f"before: {a}. after: {b}. <score>{i}</score>" for i, (a, b) in enumerate(PAIRS)]
    messages = [conversation(prompt, answer=answer) for prompt, answer in zip(PROMPTS, answers)]
    batch = encode_batch(processor, messages, [[image(a), image(b)] for a, b in PAIRS], add_generation_prompt=False)
    labels = batch["input_ids"].masked_fill((batch["attention_mask"] == 0) | (batch["mm_token_type_ids"] != 0), -100)
    watched = {
        "text": model.model.language_model.layers[0].mlp.up_proj.weight,
        "vision": model.model.visual.blocks[0].mlp.up_proj.weight,
    }
    before = {k: v.detach().clone() for k, v in watched.items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = model(**batch, labels=labels).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    for key, param in watched.items():
        assert not torch.equal(param, before[key]), key


def test_image_positions_need_mm_token_type_ids(rrm):
    model, processor = rrm
    batch = prompt_batch(processor)
    with torch.no_grad():
        full = model(**batch).logits
        text_positions = model(**{k: v for k, v in batch.items() if k != "mm_token_type_ids"}).logits
    assert not torch.allclose(full, text_positions)  # 3-D image positions only with mm_token_type_ids


def test_save_load_roundtrip_gives_identical_logits(rrm, tmp_path):
    model, processor = rrm
    model.eval()
    save_rrm(model, processor, tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded, loaded_processor = load_rrm(tmp_path)
    assert not loaded.training
    batch = prompt_batch(loaded_processor)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, loaded(**batch).logits, rtol=0, atol=0)
    assert loaded.config.text_config.rope_parameters["rope_theta"] == 10.0


def test_tiny_rrm_builds_everything(tmp_path):
    model, processor = tiny_rrm(synthetic_corpus(50), tmp_path, TinyRRMSpec(seed=1))
    assert (tmp_path / "tokenizer" / "tokenizer.json").exists()
    assert model.config.text_config.vocab_size == len(processor.tokenizer)
    assert processor.image_processor.size["longest_edge"] == 56 * 56


def test_generate_left_padded_batch_matches_single_prompts_and_suppresses_vision(rrm):
    model, processor = rrm
    model.eval()
    batch = prompt_batch(processor)
    assert batch["attention_mask"][:, 0].tolist().count(0) >= 1  # prompts differ in length: left padding
    # Point the image-pad row at the prompt's last hidden state so an unsuppressed decoder picks it.
    with torch.no_grad():
        hidden = model(**batch, output_hidden_states=True).hidden_states[-1][:, -1]
        pad_id = processor.image_token_id
        model.lm_head.weight[pad_id] = 50 * model.model.language_model.norm(hidden).mean(0)
        assert (model(**batch).logits[:, -1].argmax(-1) == pad_id).all()
    out = generate_ids(model, processor, batch, max_new_tokens=12)
    assert len(out.texts) == 3 and all(isinstance(t, str) for t in out.texts)
    assert not torch.isin(out.completion_ids, torch.tensor(vision_token_ids(processor.tokenizer))).any()
    for i in range(3):
        single = encode_batch(processor, [conversation(PROMPTS[i])], [[image(a) for a in PAIRS[i]]])
        assert generate(model, processor, single, max_new_tokens=12) == [out.texts[i]]
    sampled = generate_ids(model, processor, batch, 24, temperature=1.5, num_return_sequences=4, seed=0)
    assert not torch.isin(sampled.completion_ids, torch.tensor(vision_token_ids(processor.tokenizer))).any()
    assert all(token not in text for text in sampled.texts for token in VISION_TOKENS)


def test_sampling_with_seed_is_reproducible_and_leaves_global_rng(rrm):
    model, processor = rrm
    model.eval()
    batch = prompt_batch(processor)
    state = torch.get_rng_state()
    first = generate_ids(model, processor, batch, 16, temperature=1.0, num_return_sequences=2, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    again = generate_ids(model, processor, batch, 16, temperature=1.0, num_return_sequences=2, seed=7)
    other = generate_ids(model, processor, batch, 16, temperature=1.0, num_return_sequences=2, seed=8)
    assert first.texts == again.texts and torch.equal(first.completion_ids, again.completion_ids)
    assert first.completion_ids.shape[0] == 6 and not torch.equal(first.completion_ids, other.completion_ids)
    # num_return_sequences expands images the same way as repeat_batch does.
    repeated = generate_ids(model, processor, repeat_batch(processor, batch, 2), 16, temperature=1.0, seed=7)
    assert repeated.texts == first.texts


def test_repeat_batch_regroups_images_per_example(rrm):
    _, processor = rrm
    counts = [2, 0, 1]
    messages = [conversation(f"prompt {i}", n) for i, n in enumerate(counts)]
    colours = [["red", "blue"], [], ["green"]]
    images = [[image(c) for c in cs] for cs in colours]
    repeated = repeat_batch(processor, encode_batch(processor, messages, images), 2)
    expected = encode_batch(processor, [m for m in messages for _ in range(2)], [i for i in images for _ in range(2)])
    assert repeated.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(repeated[key], expected[key])


def test_completion_batch_reproduces_greedy_tokens(rrm):
    model, processor = rrm
    model.eval()
    batch = prompt_batch(processor)
    out = generate_ids(model, processor, batch, max_new_tokens=10)
    forward = completion_batch(processor, batch, out)
    prompt_length = batch["input_ids"].shape[1]
    with torch.no_grad():
        logits = model(**forward).logits[:, prompt_length - 1 : -1]
    logits[..., vision_token_ids(processor.tokenizer)] = -torch.inf
    mask = out.completion_mask.bool()
    assert torch.equal(logits.argmax(-1)[mask], out.completion_ids[mask])


def test_add_score_tokens_to_a_tokenizer_without_them(tmp_path):
    bpe = Tokenizer(models.BPE())
    # Like Qwen's: digits one per token, so "10" is two tokens and "<score>" several.
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(synthetic_corpus(50) + ["10 100 1000 <score>"] * 20, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    spec = TinyRRMSpec()
    model, processor = build_tiny_rrm(spec, tokenizer), build_processor(tokenizer, spec)
    with pytest.raises(ValueError, match="not a single token"):
        score_token_ids(processor.tokenizer)
    assert add_score_tokens(model, processor) == 3
    assert add_score_tokens(model, processor) == 0
    assert len(score_token_ids(processor.tokenizer)) == 11
    assert model.get_input_embeddings().num_embeddings == len(processor.tokenizer)


def test_measure_size_and_speed(rrm):
    """Prints parameter count, one train step (batch 4) and 64-token generation (batch 8)."""
    model, processor = rrm
    n_params = sum(p.numel() for p in model.parameters())
    answer = "before: red circle. after: blue circle. <score>9</score>"
    messages = [conversation(PROMPTS[i % 3], answer=answer) for i in range(4)]
    images = [[image(a), image(b)] for a, b in (PAIRS[i % 3] for i in range(4))]
    batch = encode_batch(processor, messages, images, add_generation_prompt=False)
    labels = batch["input_ids"].masked_fill((batch["attention_mask"] == 0) | (batch["mm_token_type_ids"] != 0), -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    step_times = []
    for _ in range(4):
        start = time.perf_counter()
        optimizer.zero_grad()
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        step_times.append(time.perf_counter() - start)
    model.eval()
    prompts = prompt_batch(processor, n=8)
    gen_times = []
    for seed in range(2):
        start = time.perf_counter()
        out = generate_ids(model, processor, prompts, 64, temperature=1.0, seed=seed)
        gen_times.append(time.perf_counter() - start)
    print(
        f"\n[models] params={n_params:,} train_step(batch 4)={min(step_times[1:]):.3f}s "
        f"generate(batch 8, 64 tokens)={min(gen_times):.3f}s new_tokens={int(out.completion_mask.sum())}"
    )
    assert n_params < 1_000_000


def test_paired_frames_give_later_images_the_first_as_frame_zero(tokenizer, tmp_path):
    spec = TinyRRMSpec(paired_frames=True)
    processor = build_processor(tokenizer, spec)
    plain = build_processor(tokenizer, TinyRRMSpec())
    assert processor.paired_frames and not plain.paired_frames
    messages = [conversation(PROMPTS[i]) for i in range(2)]
    images = [[image("red"), image("blue")], [image("green"), image("purple")]]
    paired, still = encode_batch(processor, messages, images), encode_batch(plain, messages, images)
    for key in ("input_ids", "attention_mask", "image_grid_thw"):
        assert torch.equal(paired[key], still[key])
    frames = [p.view(16, 3, 2, 14 * 14) for p in paired["pixel_values"].split(16)]
    originals = [p.view(16, 3, 2, 14 * 14) for p in still["pixel_values"].split(16)]
    for first, later in ((0, 1), (2, 3)):  # each example: source, then edited image
        assert torch.equal(frames[first], originals[first])  # a source is still repeated over both frames
        assert torch.equal(frames[later][:, :, 0], originals[first][:, :, 0])
        assert torch.equal(frames[later][:, :, 1], originals[later][:, :, 1])
    save_processor(processor, tmp_path)
    assert load_processor(tmp_path).paired_frames
    save_processor(plain, tmp_path / "plain")
    assert not load_processor(tmp_path / "plain").paired_frames
