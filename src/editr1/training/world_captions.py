"""Caption examples drawn fresh from the synthetic world at every step (`sft.caption_source: world`).

    captions = WorldCaptions(world_cfg, reasoning_style="side_by_side", seed=0, held_out=val_and_test_scenes)
    examples = captions.batch(step, 32)     # 32 new (source, edited) pairs with their description

Why. A caption example teaches the RRM to read its images: the two images in, the description
line of a trace out (`editr1.training.data.caption_examples`). Taken from the train trajectories
there are a few thousand of them, and the tiny decoder learns them by heart instead of learning to
read (README, "Training the RRM": caption loss 0.16 on train, 0.53 on val). A real VLM reads
because it was pre-trained on far more captioned images than it could memorise; the world can
give the tiny one the same: every step draws new contexts and candidate edits exactly as a world
batch does (`sample_context`, `sample_candidates`), renders them, and describes them in the
teacher's reasoning style from their scene graphs — the truth, not the teacher's perception.

Nothing of the preferences is used: a caption is about one pair of images, never about which edit
is better. Scenes equal to a held-out (val or test) image's scene are skipped all the same. A
step's examples depend on (seed, step) only, so a resumed run draws the same ones; with several
workers each rank draws the whole batch (scene graphs are cheap) and renders its own share.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from editr1.rrm.items import Context, Quadruple
from editr1.teachers.oracle_text import descriptions
from editr1.training import parallel
from editr1.training.data import SFTExample
from editr1.world.editors import sample_candidates
from editr1.world.instructions import sample_context
from editr1.world.params import WorldConfig
from editr1.world.scene import Scene, render, render_edit


@dataclass(frozen=True)
class WorldCaptionSpec:
    """What `WorldCaptions` needs from params.yaml: the world's config and the (oracle) teacher's
    reasoning style, which the captions are written in."""

    world: WorldConfig
    reasoning_style: str

    @classmethod
    def from_params(cls, path: Path) -> WorldCaptionSpec:
        from editr1.config import TeacherConfig, load_config

        return cls(load_config(WorldConfig, "world", path), load_config(TeacherConfig, "teacher", path).reasoning_style)


class WorldCaptions:
    """Fresh (source, edited) image pairs of the world with the teacher-style description of both."""

    def __init__(self, world: WorldConfig, *, reasoning_style: str, seed: int, held_out: Collection[Scene] = ()):
        self.world = world
        self.style = reasoning_style
        self.seed = seed
        self.held_out = frozenset(held_out)

    def _draw(self, rng: np.random.Generator) -> tuple[Scene, Scene, object, str]:
        """(source scene, edited scene, effects, caption) of one new pair, outside the held-out scenes."""
        while True:
            source, spec = sample_context(rng, self.world)
            candidate = sample_candidates(source, spec, rng, self.world)[0]
            if source in self.held_out or candidate.scene in self.held_out:
                continue
            templates, source_text, edited_text = descriptions(self.style, source, candidate.scene, candidate.effects)
            header = templates[int(rng.integers(len(templates)))].header
            return source, candidate.scene, candidate.effects, header.format(source=source_text, edited=edited_text)

    def batch(self, step: int, size: int) -> list[SFTExample]:
        """This rank's share of step ``step``'s ``size`` caption examples (seeded by seed and step)."""
        rng = np.random.default_rng([self.seed, step])
        drawn = [self._draw(rng) for _ in range(size)]
        out = []
        for i in parallel.shard(list(range(size))):
            source, edited, effects, caption = drawn[i]
            context = Context(f"world-{step}-{i}", "", render(source, self.world.image_size))
            quad = Quadruple(context, render_edit(edited, effects, self.world.image_size), ())
            out.append(SFTExample(quad, caption, "caption"))
        return out
