"""Qwen2.5-VL processor without torchvision: build, save, load, and encode chat batches.

The stock `Qwen2_5_VLProcessor` needs a video processor (torchvision) and its
`save_pretrained` fails without one, so this module builds it from a PIL image processor and
saves the tokenizer and image processor side by side::

    from editr1.models.processor import build_processor, encode_batch, load_processor, save_processor
    processor = build_processor(tokenizer, spec)      # spec: editr1.models.rrm.TinyRRMSpec
    save_processor(processor, Path("runs/rrm"))
    processor = load_processor("runs/rrm")            # or a hub id, e.g. "Qwen/Qwen2.5-VL-3B-Instruct"
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                             {"type": "text", "text": "Make the circle blue."}]}]
    batch = encode_batch(processor, [messages], [[source_image, edited_image]])
    logits = model(**batch).logits

Always feed the model the whole batch: without ``mm_token_type_ids`` Qwen2.5-VL silently falls
back to 1-D text positions for the image tokens.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from transformers import AutoTokenizer, BatchFeature, PreTrainedTokenizerBase, Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from editr1.models.tokenizer import CHAT_TEMPLATE, IMAGE_PAD

if TYPE_CHECKING:
    from editr1.models.rrm import TinyRRMSpec

Message = dict[str, Any]
SETTINGS_FILE = "editr1_processor.json"


class RRMProcessor(Qwen2_5_VLProcessor):
    """`Qwen2_5_VLProcessor` that accepts ``video_processor=None`` (images only, no torchvision).

    The parent's type check looks a None video processor up in the auto mapping and fails with
    ``AttributeError: type object 'VIDEO_PROCESSOR_MAPPING' has no attribute '_extra_content'``.
    Do not call `save_pretrained` on it: use `save_processor`.

    ``paired_frames`` (tiny RRMs built with `TinyRRMSpec.paired_frames`): `encode_batch` gives every
    later image of an example the example's first image as its first temporal frame (see
    `with_first_frame`), so each token of the edited image shows its cell before and after the edit.
    """

    paired_frames: bool = False

    def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
        if argument_name == "video_processor" and argument is None:
            return None
        return super().check_argument_for_proper_class(argument_name, argument)


def build_processor(tokenizer: PreTrainedTokenizerBase, spec: TinyRRMSpec) -> RRMProcessor:
    """Processor for the tiny RRM: PIL image processor sized by ``spec``, left-padding ``tokenizer``.

    Sets ``tokenizer.padding_side = "left"`` (batched generation needs it).
    """
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": spec.image_min_pixels, "longest_edge": spec.image_max_pixels},
        patch_size=spec.patch_size,
        temporal_patch_size=spec.temporal_patch_size,
        merge_size=spec.spatial_merge_size,
    )
    processor = _assemble(tokenizer, image_processor)
    processor.paired_frames = spec.paired_frames
    return processor


def _assemble(tokenizer: PreTrainedTokenizerBase, image_processor: Qwen2VLImageProcessorPil) -> RRMProcessor:
    tokenizer.padding_side = "left"
    # Hub Qwen checkpoints keep the template in the processor's files, which a tokenizer may not
    # read; ours is Qwen2.5-VL's own, so falling back to it renders prompts identically.
    chat_template = tokenizer.chat_template or CHAT_TEMPLATE
    tokenizer.chat_template = chat_template
    return RRMProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=None, chat_template=chat_template
    )


def save_processor(processor: RRMProcessor, out_dir: Path) -> None:
    """Write the tokenizer and image processor files into ``out_dir`` (reload with `load_processor`).

    ``processor.save_pretrained`` fails without a video processor
    (``AttributeError: 'NoneType' object has no attribute '_auto_class'``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    processor.tokenizer.save_pretrained(out_dir)
    processor.image_processor.save_pretrained(out_dir)
    if processor.paired_frames:
        (out_dir / SETTINGS_FILE).write_text(json.dumps({"paired_frames": True}) + "\n")


def load_processor(path_or_id: str | Path) -> RRMProcessor:
    """Rebuild a processor from a `save_processor` directory or a Qwen2.5-VL hub id / snapshot.

    ``AutoProcessor.from_pretrained`` on a `save_processor` directory silently returns only the
    tokenizer, and ``Qwen2_5_VLProcessor.from_pretrained`` needs torchvision for the video
    processor; loading the two parts works in both cases.
    """
    source = str(path_or_id)
    tokenizer = AutoTokenizer.from_pretrained(source)
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(source)
    processor = _assemble(tokenizer, image_processor)
    settings = Path(source) / SETTINGS_FILE
    if settings.is_file():
        processor.paired_frames = bool(json.loads(settings.read_text()).get("paired_frames", False))
    return processor


def with_first_frame(pixel_values: torch.Tensor, first: torch.Tensor, temporal_patch_size: int,
                     patch_size: int) -> torch.Tensor:
    """Patches ``pixel_values`` (n, C*T*P*P, one image) with frame 0 of every patch taken from
    ``first`` (the same layout: another image of the same size). Qwen2.5-VL repeats a still image
    over its T = 2 temporal frames; given (source, edited) instead, its 3-D patch embedding sees each
    cell before and after the edit in one token, so telling "changed" from "same" is local to a token."""
    if temporal_patch_size < 2:
        raise ValueError("paired frames need temporal_patch_size >= 2")
    if pixel_values.shape != first.shape:
        raise ValueError(f"paired frames need images of the same size: {tuple(pixel_values.shape)} vs "
                         f"{tuple(first.shape)}")
    n = pixel_values.shape[0]
    out = pixel_values.clone().view(n, -1, temporal_patch_size, patch_size * patch_size)
    out[:, :, 0] = first.view(n, -1, temporal_patch_size, patch_size * patch_size)[:, :, 0]
    return out.view(n, -1)


def render_chat(processor: RRMProcessor, messages: list[Message], add_generation_prompt: bool = True) -> str:
    """Chat-template text of one conversation; each image item becomes a vision placeholder."""
    return processor.tokenizer.apply_chat_template(
        messages, chat_template=processor.chat_template, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def encode_batch(
    processor: RRMProcessor,
    messages_list: Sequence[list[Message]],
    images_list: Sequence[Sequence[Image.Image]] | None,
    add_generation_prompt: bool = True,
) -> BatchFeature:
    """Left-padded model inputs for a batch of conversations and their images (in content order).

    Returns ``input_ids``, ``attention_mask``, ``mm_token_type_ids`` (B, L) and, when there are
    images, ``pixel_values`` (n_patches, C*T*P*P) and ``image_grid_thw`` (n_images, 3).
    ``add_generation_prompt=False`` encodes finished conversations (SFT targets included).
    Raises ValueError when an example's image count differs from its image items.
    """
    if images_list is None:
        images_list = [[] for _ in messages_list]
    if len(images_list) != len(messages_list):
        raise ValueError(f"{len(messages_list)} conversations but {len(images_list)} image lists")
    texts = [render_chat(processor, m, add_generation_prompt) for m in messages_list]
    for i, (text, images) in enumerate(zip(texts, images_list)):
        if text.count(IMAGE_PAD) != len(images):
            raise ValueError(f"example {i}: {text.count(IMAGE_PAD)} image items but {len(images)} images")
    flat_images = [image for images in images_list for image in images]
    batch = processor(text=texts, images=flat_images or None, padding=True, return_tensors="pt")
    if processor.paired_frames and flat_images:
        image_processor = processor.image_processor
        patches = list(batch["pixel_values"].split(batch["image_grid_thw"].prod(dim=1).tolist()))
        start = 0
        for images in images_list:
            for later in range(start + 1, start + len(images)):
                patches[later] = with_first_frame(patches[later], patches[start], image_processor.temporal_patch_size,
                                                  image_processor.patch_size)
            start += len(images)
        batch["pixel_values"] = torch.cat(patches)
    return batch
