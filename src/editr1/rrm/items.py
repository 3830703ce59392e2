"""What the RRM judges: a context (source image + instruction) and a quadruple (context + edited
image + principles). Images are PIL images; shas identify them in the lake's object store."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from editr1.rrm.principles import Principle


@dataclass(frozen=True)
class Context:
    """A source image and an instruction (one `context_id` in the curated data)."""

    context_id: str
    instruction: str
    source: Image.Image
    source_sha: str = ""
    category: str | None = None


@dataclass(frozen=True)
class Quadruple:
    """(source image, edited image, instruction, principles): one RRM judgement's input."""

    context: Context
    edited: Image.Image
    principles: tuple[Principle, ...]
    edited_sha: str = ""

    @property
    def instruction(self) -> str:
        return self.context.instruction

    @property
    def source(self) -> Image.Image:
        return self.context.source
