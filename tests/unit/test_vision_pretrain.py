"""Vision pre-training on scene graphs: the targets, and a tiny vision tower that learns them."""

from __future__ import annotations

import random

import pytest
import torch

from editr1.models.processor import build_processor
from editr1.models.rrm import TinyRRMSpec, build_tiny_rrm
from editr1.models.tokenizer import train_tokenizer
from editr1.training.vision_pretrain import SceneVocab, VisionPretrainer
from editr1.world.scene import Scene, Shape, render

COLORS = ("red", "green", "blue")
# The per-token head: positions come later than contents (measured: 0.11 at the start, 0.34 after 200
# steps, 0.84 after 300, 0.91 after 400 on the held-out images below).
STEPS_PER_TOKEN = 300
POSITION_BAR = 0.6
KINDS = ("circle", "square")


def random_scene(rng: random.Random) -> Scene:
    cells = rng.sample([(r, c) for r in range(3) for c in range(3)], rng.randint(1, 2))
    shapes = tuple(Shape(i, rng.choice(KINDS), rng.choice(COLORS), float(r), float(c)) for i, (r, c) in enumerate(cells))
    return Scene(rng.choice(("gray", "black")), shapes)


def test_targets_put_each_shape_in_its_cell():
    scene = Scene("gray", (Shape(0, "square", "red", 0.0, 2.0), Shape(1, "circle", "blue", 2.0, 0.6)))
    vocab = SceneVocab.of([scene, Scene("black", ())])
    assert vocab.colors == ("none", "blue", "red") and vocab.kinds == ("none", "circle", "square")
    assert vocab.backgrounds == ("black", "gray") and vocab.outputs == 9 * 3 + 9 * 3 + 2
    colors, kinds, background = vocab.targets(scene)
    assert colors == [0, 0, 2, 0, 0, 0, 0, 1, 0]  # red top right; blue mid-move at column 0.6 → cell (2, 1)
    assert kinds == [0, 0, 2, 0, 0, 0, 0, 1, 0]
    assert background == 1


def test_scenes_of_different_grids_are_refused():
    with pytest.raises(ValueError, match="grid sizes"):
        SceneVocab.of([Scene("gray", ()), Scene("gray", (), grid_size=4)])


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread here (FINDINGS.md); two collapse when the machine is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_vision_tower_learns_the_scenes_and_only_it_changes(tmp_path, one_thread):
    torch.manual_seed(0)
    tokenizer = train_tokenizer(["a red circle on gray", "<score>7</score>"], 300, tmp_path / "tok")
    spec = TinyRRMSpec(vocab_size=300, patch_size=7)
    model, processor = build_tiny_rrm(spec, tokenizer), build_processor(tokenizer, spec)
    rng = random.Random(0)
    scenes = {f"img{i}": random_scene(rng) for i in range(64)}
    images = {sha: render(scene, 56) for sha, scene in scenes.items()}
    held_out = {sha: scenes.pop(sha) for sha in list(scenes)[:16]}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    pretrainer = VisionPretrainer(model, processor, images.__getitem__, scenes, seed=0, lr=3e-3, batch_size=16)
    first = pretrainer.loss(list(scenes)).item()
    start = pretrainer.accuracy(held_out)
    for _ in range(40):
        pretrainer.step()
    assert pretrainer.loss(list(scenes)).item() < 0.6 * first
    after = pretrainer.accuracy(held_out)
    assert after["background"] == 1.0 and after["color"] > start["color"], (start, after)

    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and all(".visual." in f".{n}" for n in changed), sorted(changed)[:5]


def test_one_token_per_cell_holds_its_own_cell(tmp_path, one_thread):
    """84-px images, 14-px patches merged 2×2: 3×3 image tokens, one per cell. One head shared by
    all tokens reads each token alone: a token can only be right about its own cell, and about
    where it is if the tower puts that in the token."""
    torch.manual_seed(0)
    tokenizer = train_tokenizer(["a red circle on gray", "<score>7</score>"], 300, tmp_path / "tok")
    spec = TinyRRMSpec(vocab_size=300, patch_size=14, image_min_pixels=84 * 84, image_max_pixels=84 * 84)
    model, processor = build_tiny_rrm(spec, tokenizer), build_processor(tokenizer, spec)
    rng = random.Random(1)
    scenes = {f"img{i}": random_scene(rng) for i in range(48)}
    images = {sha: render(scene, 84) for sha, scene in scenes.items()}
    held_out = {sha: scenes.pop(sha) for sha in list(scenes)[:12]}
    pretrainer = VisionPretrainer(model, processor, images.__getitem__, scenes, seed=0, lr=3e-3, batch_size=16)
    assert pretrainer.per_token and pretrainer.head.in_features == spec.hidden_size
    start = pretrainer.accuracy(held_out)
    for _ in range(STEPS_PER_TOKEN):
        pretrainer.step()
    after = pretrainer.accuracy(held_out)
    assert after["background"] == 1.0 and after["color"] == 1.0 > start["color"], (start, after)
    assert after["kind"] > start["kind"] and after["position"] > POSITION_BAR > start["position"], (start, after)


def test_paired_frames_teach_each_edited_token_its_source_cell(tmp_path, one_thread):
    """With paired frames the edited image's tokens also see the source (its first frame); the
    pre-training adds the source's colour and kind per token, learned from (source, edit) pairs."""
    torch.manual_seed(0)
    tokenizer = train_tokenizer(["a red circle on gray", "<score>7</score>"], 300, tmp_path / "tok")
    spec = TinyRRMSpec(vocab_size=300, patch_size=14, image_min_pixels=84 * 84, image_max_pixels=84 * 84,
                       paired_frames=True)
    model, processor = build_tiny_rrm(spec, tokenizer), build_processor(tokenizer, spec)
    rng = random.Random(2)
    scenes = {f"src{i}": random_scene(rng) for i in range(24)}
    for i in range(24):  # each edit recolours the source's first shape
        first, *rest = scenes[f"src{i}"].shapes
        colour = next(c for c in COLORS if c != first.color)
        scenes[f"edit{i}"] = Scene(scenes[f"src{i}"].background, (Shape(0, first.kind, colour, first.row, first.col),
                                                                  *rest))
    images = {sha: render(scene, 84) for sha, scene in scenes.items()}
    pairs = [(f"src{i}", f"edit{i}") for i in range(24)]
    pretrainer = VisionPretrainer(model, processor, images.__getitem__, scenes, seed=0, lr=3e-3, batch_size=16,
                                  pairs=pairs + [("src0", "src0"), ("src0", "missing")])
    assert len(pretrainer.items) == 48 + 24  # every image alone, and every known edit with its source
    vocab = pretrainer.vocab
    assert pretrainer.head.out_features == 2 * (len(vocab.colors) + len(vocab.kinds)) + 2 * vocab.grid_size

    def source_colour_accuracy() -> float:
        with torch.no_grad():
            _, _, _, extra = pretrainer._logits(pairs)
        idx = torch.tensor([pretrainer.index[p] for p in pairs])
        guess = extra[..., 2 * vocab.grid_size:2 * vocab.grid_size + len(vocab.colors)].argmax(-1)
        return float((guess == pretrainer.first_colors[idx]).float().mean())

    start = source_colour_accuracy()
    for _ in range(150):
        pretrainer.step()
    after = source_colour_accuracy()
    assert after > 0.95 > start, (start, after)  # the edited image's tokens name what the source had there
