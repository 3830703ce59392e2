"""Caption examples drawn fresh from the world: seeded by step, in the teacher's style, held-out scenes skipped."""

from __future__ import annotations

import numpy as np

from editr1.teachers.oracle_text import SIDE_BY_SIDE_TEMPLATES
from editr1.training.world_captions import WorldCaptions
from editr1.world.params import WorldConfig

HEADERS = tuple(t.header.split("{")[0] for t in SIDE_BY_SIDE_TEMPLATES)


def test_a_step_draws_the_same_new_pairs_every_time_and_the_next_step_others():
    world = WorldConfig(image_size=56)
    captions = WorldCaptions(world, reasoning_style="side_by_side", seed=3)
    first, again, other = captions.batch(7, 12), captions.batch(7, 12), captions.batch(8, 12)
    assert [e.target for e in first] == [e.target for e in again]
    assert [e.quad.edited.tobytes() for e in first] == [e.quad.edited.tobytes() for e in again]
    assert len({e.target for e in first} & {e.target for e in other}) < 3
    assert all(e.kind == "caption" and e.target.startswith(HEADERS) and "→" in e.target for e in first)
    assert all(e.quad.source.size == (56, 56) == e.quad.edited.size for e in first)
    assert len({e.target for e in first}) > 8  # new pairs, not one repeated


def test_cells_style_and_held_out_scenes():
    world = WorldConfig(image_size=56)
    cells = WorldCaptions(world, reasoning_style="cells", seed=0).batch(0, 4)
    assert all(e.target.count(":") == 10 for e in cells)

    free = WorldCaptions(world, reasoning_style="side_by_side", seed=0)
    source, edited, _, caption = free._draw(np.random.default_rng([0, 0]))  # step 0's first draw
    assert free.batch(0, 1)[0].target == caption
    for scene in (source, edited):  # held out: that pair is skipped, the next one drawn
        held = WorldCaptions(world, reasoning_style="side_by_side", seed=0, held_out=[scene])
        assert held.batch(0, 1)[0].target != caption
