"""The reasoning reward model (RRM): a Qwen2.5-VL model built tiny offline or loaded from the hub.

Build a tiny RRM from local text, save it, load it back, and generate reasoning::

    from editr1.models.rrm import TinyRRMSpec, completion_batch, generate, generate_ids, load_rrm, save_rrm, tiny_rrm
    from editr1.models.processor import encode_batch
    model, processor = tiny_rrm(corpus_lines, workdir=Path("runs/rrm0"), spec=TinyRRMSpec())
    save_rrm(model, processor, Path("runs/rrm0/model"))
    model, processor = load_rrm("runs/rrm0/model")          # or "Qwen/Qwen2.5-VL-3B-Instruct"
    batch = encode_batch(processor, messages_list, images_list)
    texts = generate(model, processor, batch, max_new_tokens=64)                  # greedy
    out = generate_ids(model, processor, batch, 64, temperature=1.0, num_return_sequences=8, seed=0)
    scored = completion_batch(processor, batch, out)        # teacher-forced inputs for log-probs

Generation never emits vision placeholder tokens (a sampled ``<|image_pad|>`` without pixels
breaks the next forward) and stops at ``<|im_end|>``. Sampling draws from softmax(logits / T)
with no top-k, top-p or repetition penalty, so the RL trainer's log-probs match the sampler.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import BatchFeature, GenerationConfig, PreTrainedTokenizerBase, Qwen2_5_VLConfig
from transformers import Qwen2_5_VLForConditionalGeneration

from editr1.models.attention import use_packed_vision_attention
from editr1.models.processor import RRMProcessor, build_processor, load_processor, save_processor
from editr1.models.tokenizer import (
    ENDOFTEXT,
    IM_END,
    IMAGE_PAD,
    SCORE_ADDED_TOKENS,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
    train_tokenizer,
    vision_token_ids,
)


@dataclass(frozen=True)
class TinyRRMSpec:
    """Architecture of the tiny Qwen2.5-VL RRM used on CPU (see FINDINGS.md, "The RRM")."""

    vocab_size: int = field(
        default=2000,
        metadata={"help": "Target tokenizer size (BPE + special + score tokens); the model's vocab is len(tokenizer)."},
    )
    hidden_size: int = field(default=64, metadata={"help": "Text decoder hidden size."})
    num_layers: int = field(default=2, metadata={"help": "Text decoder layers."})
    num_heads: int = field(
        default=4,
        metadata={"help": "Text attention heads (head dim = hidden_size / num_heads)."},
    )
    num_kv_heads: int = field(default=2, metadata={"help": "Text key/value heads (grouped-query attention)."})
    intermediate_size: int = field(default=256, metadata={"help": "Text MLP inner size."})
    rope_theta: float = field(
        default=10.0,
        metadata={"help": "RoPE base; low so the 2-D positions of a few image tokens differ (1e4: nearly equal)."},
    )
    max_position_embeddings: int = field(
        default=2048,
        metadata={"help": "Longest sequence the text decoder supports."},
    )
    vision_depth: int = field(
        default=2,
        metadata={"help": "Vision transformer blocks (the last one uses full attention)."},
    )
    vision_hidden_size: int = field(default=32, metadata={"help": "Vision transformer hidden size."})
    vision_num_heads: int = field(default=2, metadata={"help": "Vision attention heads."})
    vision_intermediate_size: int = field(default=128, metadata={"help": "Vision MLP inner size."})
    patch_size: int = field(default=14, metadata={"help": "Vision patch side in pixels."})
    spatial_merge_size: int = field(
        default=2,
        metadata={"help": "Patches merged per side into one text-side image token."},
    )
    temporal_patch_size: int = field(
        default=2,
        metadata={"help": "Frames per patch (an image is repeated to fill it)."},
    )
    paired_frames: bool = field(
        default=False,
        metadata={"help": "Feed the edited image with the source as its first temporal frame "
                          "(`editr1.models.processor.with_first_frame`): each of its tokens sees its cell before and "
                          "after the edit."},
    )
    image_min_pixels: int = field(
        default=56 * 56,
        metadata={"help": "Smallest resized image area; sides snap to multiples of patch_size * spatial_merge_size."},
    )
    image_max_pixels: int = field(
        default=56 * 56,
        metadata={"help": "Largest resized image area: 56x56 gives 4 image tokens, so every image costs the same."},
    )
    tie_word_embeddings: bool = field(
        default=True,
        metadata={"help": "Share the input embedding and the LM head (as Qwen2.5-VL-3B does)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the random initialisation."})


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim / 2 rotary frequencies over (time, height, width) in Qwen's 1:1.5:1.5 ratio."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def rrm_config(spec: TinyRRMSpec, tokenizer: PreTrainedTokenizerBase) -> Qwen2_5_VLConfig:
    """A `Qwen2_5_VLConfig` for ``spec`` whose special token ids come from ``tokenizer``."""
    if len(tokenizer) > spec.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens > spec.vocab_size {spec.vocab_size}")
    if spec.hidden_size % spec.num_heads or spec.num_heads % spec.num_kv_heads:
        raise ValueError("hidden_size must divide by num_heads and num_heads by num_kv_heads")
    head_dim = spec.hidden_size // spec.num_heads
    if head_dim % 2 or head_dim < 6:
        raise ValueError(f"head dim {head_dim} must be even and >= 6 for 3-D rotary positions")
    names = [ENDOFTEXT, IM_END, IMAGE_PAD, VIDEO_PAD, VISION_START, VISION_END]
    ids = dict(zip(names, tokenizer.convert_tokens_to_ids(names)))
    text_config = dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": spec.rope_theta,
            "mrope_section": _mrope_section(head_dim),
        },
        bos_token_id=None,
        eos_token_id=ids[IM_END],
        pad_token_id=ids[ENDOFTEXT],
    )
    vision_config = dict(
        depth=spec.vision_depth,
        hidden_size=spec.vision_hidden_size,
        intermediate_size=spec.vision_intermediate_size,
        num_heads=spec.vision_num_heads,
        patch_size=spec.patch_size,
        spatial_merge_size=spec.spatial_merge_size,
        temporal_patch_size=spec.temporal_patch_size,
        out_hidden_size=spec.hidden_size,
        fullatt_block_indexes=[spec.vision_depth - 1],
    )
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids[IMAGE_PAD],
        video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END],
        tie_word_embeddings=spec.tie_word_embeddings,
    )


def build_tiny_rrm(spec: TinyRRMSpec, tokenizer: PreTrainedTokenizerBase) -> Qwen2_5_VLForConditionalGeneration:
    """A randomly initialised tiny RRM (seeded by ``spec.seed``, global RNG untouched), in train mode."""
    config = rrm_config(spec, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    use_packed_vision_attention(model)
    eos = tokenizer.convert_tokens_to_ids([IM_END, ENDOFTEXT])
    model.generation_config = GenerationConfig(
        eos_token_id=eos, pad_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT), bos_token_id=None
    )
    model.train()
    return model


def tiny_rrm(
    corpus: Iterable[str], workdir: Path, spec: TinyRRMSpec = TinyRRMSpec()
) -> tuple[Qwen2_5_VLForConditionalGeneration, RRMProcessor]:
    """Train a tokenizer on ``corpus`` (saved in ``workdir/tokenizer``) and build model and processor."""
    tokenizer = train_tokenizer(corpus, spec.vocab_size, Path(workdir) / "tokenizer")
    processor = build_processor(tokenizer, spec)
    return build_tiny_rrm(spec, tokenizer), processor


def save_rrm(model: Qwen2_5_VLForConditionalGeneration, processor: RRMProcessor, out_dir: Path) -> Path:
    """Save weights (safetensors), config, generation config and processor files in ``out_dir``."""
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    save_processor(processor, out_dir)
    return out_dir


def load_rrm(
    path_or_id: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> tuple[Qwen2_5_VLForConditionalGeneration, RRMProcessor]:
    """Load an RRM saved by `save_rrm`, or a Qwen2.5-VL hub id / snapshot, in eval mode on ``device``.

    For a checkpoint whose tokenizer lacks single score tokens (any hub Qwen), ``<score>``,
    ``</score>`` and ``10`` are added to the tokenizer (and the embeddings grown if needed),
    so `editr1.models.tokenizer.score_token_ids` works; SFT teaches the new rows.
    """
    processor = load_processor(path_or_id)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(path_or_id), dtype=dtype)
    use_packed_vision_attention(model)
    add_score_tokens(model, processor)
    return model.to(device).eval(), processor


def add_score_tokens(model: Qwen2_5_VLForConditionalGeneration, processor: RRMProcessor) -> int:
    """Add the missing score tokens to ``processor.tokenizer``; return how many were added."""
    tokenizer = processor.tokenizer
    missing = [t for t in SCORE_ADDED_TOKENS if len(tokenizer.encode(t, add_special_tokens=False)) != 1]
    added = tokenizer.add_tokens(missing) if missing else 0
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    return added


@dataclass
class Generation:
    """Output of `generate_ids`. Rows are example-major: row ``b * n + j`` is sample j of example b.

    sequences: (B*n, P+T) prompt (left-padded) then completion; completion_ids: (B*n, T) the new
    tokens, ``pad`` after the stop token; completion_mask: (B*n, T) 1 for generated tokens up to
    and including the stop token; texts: decoded completions without special tokens.
    """

    texts: list[str]
    sequences: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    num_return_sequences: int


def _suppressed_ids(model: Qwen2_5_VLForConditionalGeneration, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    # Embedding rows past the tokenizer (hub Qwen pads its vocabulary) have no text either.
    unused = range(len(tokenizer), model.get_output_embeddings().weight.shape[0])
    return vision_token_ids(tokenizer) + list(unused)


@torch.no_grad()
def generate_ids(
    model: Qwen2_5_VLForConditionalGeneration,
    processor: RRMProcessor,
    batch: BatchFeature,
    max_new_tokens: int,
    temperature: float = 0.0,
    num_return_sequences: int = 1,
    seed: int | None = None,
) -> Generation:
    """Generate completions for an `encode_batch` batch: greedy if ``temperature == 0``, else sampled.

    ``seed`` makes sampling reproducible without touching the global RNG.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0 and num_return_sequences > 1:
        raise ValueError("greedy decoding returns identical sequences: use temperature > 0")
    tokenizer = processor.tokenizer
    eos_ids = tokenizer.convert_tokens_to_ids([IM_END, ENDOFTEXT])
    pad_id = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    # Explicit values: unset (None) ones are filled from the checkpoint's generation config, and hub
    # Qwen's (top_k 1, top_p 0.001, repetition penalty 1.05) would make the sampler differ from the policy.
    if temperature > 0:
        sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
    else:
        sampling = dict(do_sample=False)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        num_return_sequences=num_return_sequences,
        eos_token_id=eos_ids,
        pad_token_id=pad_id,
        suppress_tokens=_suppressed_ids(model, tokenizer),
        repetition_penalty=1.0,
        **sampling,
    )
    inputs = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in batch.items()}
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        sequences = model.generate(**inputs, generation_config=config)
    prompt_length = batch["input_ids"].shape[1]
    completion_ids = sequences[:, prompt_length:]
    is_stop = torch.isin(completion_ids, torch.tensor(eos_ids, device=completion_ids.device))
    # Keep tokens up to and including the first stop token.
    after_stop = (is_stop.long().cumsum(dim=1) - is_stop.long()) > 0
    completion_mask = (~after_stop).long()
    completion_ids = completion_ids.masked_fill(after_stop, pad_id)
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    return Generation(texts, sequences, completion_ids, completion_mask, num_return_sequences)


def generate(
    model: Qwen2_5_VLForConditionalGeneration,
    processor: RRMProcessor,
    batch: BatchFeature,
    max_new_tokens: int,
    temperature: float = 0.0,
    num_return_sequences: int = 1,
    seed: int | None = None,
) -> list[str]:
    """Completion texts only (example-major); see `generate_ids` for the arguments."""
    return generate_ids(model, processor, batch, max_new_tokens, temperature, num_return_sequences, seed).texts


def repeat_batch(processor: RRMProcessor, batch: BatchFeature, n: int) -> BatchFeature:
    """Repeat each example of an `encode_batch` batch ``n`` times (example-major), images included.

    ``pixel_values`` holds the patches of all images in order, so rows are regrouped per example
    by counting its image tokens (images only; videos are not supported).
    """
    out = {k: batch[k].repeat_interleave(n, dim=0) for k in ("input_ids", "attention_mask", "mm_token_type_ids")}
    if "pixel_values" in batch:
        grid = batch["image_grid_thw"]
        patches_per_image = grid.prod(dim=1)
        image_token_end = (patches_per_image // processor.image_processor.merge_size**2).cumsum(0)
        example_token_end = (batch["input_ids"] == processor.image_token_id).sum(dim=1).cumsum(0)
        if example_token_end[-1] != image_token_end[-1]:
            raise ValueError(
                f"{int(example_token_end[-1])} image tokens but the images need {int(image_token_end[-1])}"
            )
        # Image i belongs to the example b with example_token_end[b-1] < image_token_end[i] <= example_token_end[b].
        owner = torch.searchsorted(example_token_end, image_token_end).tolist()
        pixels = batch["pixel_values"].split(patches_per_image.tolist())
        order = [i for b in range(len(example_token_end)) for _ in range(n) for i, o in enumerate(owner) if o == b]
        out["pixel_values"] = torch.cat([pixels[i] for i in order])
        out["image_grid_thw"] = grid[order]
    return BatchFeature(out)


def completion_batch(processor: RRMProcessor, batch: BatchFeature, generation: Generation) -> BatchFeature:
    """Teacher-forced inputs for prompt + completion (B*n rows), e.g. to compute token log-probs.

    The logits at positions ``P-1 .. P+T-2`` predict ``generation.completion_ids``; mask them with
    ``generation.completion_mask``.
    """
    prompts = repeat_batch(processor, batch, generation.num_return_sequences)
    mask = generation.completion_mask.to(prompts["attention_mask"])
    prompts["input_ids"] = torch.cat([prompts["input_ids"], generation.completion_ids.to(prompts["input_ids"])], dim=1)
    prompts["attention_mask"] = torch.cat([prompts["attention_mask"], mask], dim=1)
    prompts["mm_token_type_ids"] = torch.cat([prompts["mm_token_type_ids"], torch.zeros_like(mask)], dim=1)
    return prompts

