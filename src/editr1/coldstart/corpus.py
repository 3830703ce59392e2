"""Text a tiny RRM's tokenizer is trained on when no trajectories exist yet (`--model tiny`):
a small synthetic world batch seen through the oracle teacher — system prompt, user turns and
traces — so the tokenizer covers everything the RRM reads and writes."""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image

from editr1.curation.ids import context_id
from editr1.rrm.items import Context, Quadruple
from editr1.rrm.prompt import SYSTEM_PROMPT, render_user_text
from editr1.teachers.oracle import OracleTeacher
from editr1.teachers.params import TeacherConfig
from editr1.world import WorldConfig, write_batch
from editr1.world.truth import WorldTruth


def world_corpus(pairs: int = 120, seed: int = 0, world: WorldConfig | None = None) -> list[str]:
    """System prompt + user texts + K=2 oracle traces per edit of a fresh `pairs`-pair world batch."""
    world = world or WorldConfig()
    blank = Image.new("RGB", (world.image_size, world.image_size))
    with tempfile.TemporaryDirectory() as tmp:
        write_batch(Path(tmp), pairs, seed, world)
        truth = WorldTruth.from_files([Path(tmp) / "scene_graphs.jsonl"])
    teacher = OracleTeacher(truth, TeacherConfig(), world)
    texts = [SYSTEM_PROMPT]
    for edit in truth.edits():
        source = truth.source(edit.source_sha, edit.instruction)
        ctx = Context(context_id(source.sha, source.instruction), source.instruction, blank, source.sha,
                      source.category)
        (principles,) = teacher.principles([ctx])
        quad = Quadruple(ctx, blank, tuple(principles), edit.sha)
        texts.append(render_user_text(ctx.instruction, principles))
        texts.extend(teacher.traces([quad], 2, 1.0)[0])
    return texts
