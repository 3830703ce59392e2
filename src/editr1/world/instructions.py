"""Edit specifications and the instructions that ask for them.

An `EditSpec` is the machine-readable request (category, target shape id, new colour / kind /
position / background); `instruction_text` phrases it in one of several templates per GEdit
category, naming the target so that exactly one shape in the scene fits the words
(`shapes_matching` checks that). `sample_context` draws a (scene, spec) pair to edit.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np

from editr1.world.params import SHAPE_COLORS, SHAPE_KINDS, WorldConfig
from editr1.world.scene import POSITION_NAMES, Scene, is_free, position_name, sample_scene


@dataclass(frozen=True)
class EditSpec:
    """What the instruction asks for. `target` is a shape id (None for addition and background
    change); `color`, `kind`, `position` and `background` hold the requested new values."""

    category: str
    target: int | None = None
    color: str | None = None
    kind: str | None = None
    position: tuple[int, int] | None = None
    background: str | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["position"] = None if self.position is None else list(self.position)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> EditSpec:
        fields = dict(data)
        if fields.get("position") is not None:
            fields["position"] = (int(fields["position"][0]), int(fields["position"][1]))
        return cls(**fields)


def _pick(rng: np.random.Generator, options: list):
    return options[int(rng.integers(len(options)))]


def _combos(scene: Scene, ignore_id: int | None = None) -> set[tuple[str, str]]:
    return {(s.color, s.kind) for s in scene.shapes if s.id != ignore_id}


def sample_spec(scene: Scene, category: str, rng: np.random.Generator, cfg: WorldConfig) -> EditSpec | None:
    """A random edit of `category` that fits the scene, or None when none does (e.g. no free
    cell to add to). Every result keeps each (colour, kind) in the scene unique."""
    shapes = list(scene.shapes)
    if category == "background_change":
        return EditSpec(category, background=_pick(rng, [b for b in cfg.backgrounds if b != scene.background]))
    if category == "subject_addition":
        free, taken = scene.free_cells(), _combos(scene)
        combos = [(c, k) for c in cfg.colors for k in cfg.shape_kinds if (c, k) not in taken]
        if not free or not combos:
            return None
        color, kind = _pick(rng, combos)
        return EditSpec(category, color=color, kind=kind, position=_pick(rng, free))
    if not shapes:
        return None
    target = _pick(rng, shapes)
    others = _combos(scene, ignore_id=target.id)
    if category == "subject_removal":
        return EditSpec(category, target=target.id)
    if category == "color_alteration":
        colors = [c for c in cfg.colors if c != target.color and (c, target.kind) not in others]
        return EditSpec(category, target=target.id, color=_pick(rng, colors)) if colors else None
    if category == "subject_replacement":
        kinds = [k for k in cfg.shape_kinds if k != target.kind and (target.color, k) not in others]
        return EditSpec(category, target=target.id, kind=_pick(rng, kinds)) if kinds else None
    if category == "motion_change":
        # Keep only destinations whose half-way point is free too, so a half-done move
        # (the `partial` editor) never lands on another shape.
        cells = [
            cell for cell in scene.free_cells()
            if is_free(scene, ((target.row + cell[0]) / 2, (target.col + cell[1]) / 2), ignore_id=target.id)
        ]
        return EditSpec(category, target=target.id, position=_pick(rng, cells)) if cells else None
    raise ValueError(f"unknown category {category!r}")


def sample_context(rng: np.random.Generator, cfg: WorldConfig) -> tuple[Scene, EditSpec]:
    """A source scene and an edit request for it; the category is drawn by `category_weights`
    and redrawn (with a new scene if need be) until an edit of that category fits."""
    names = [c for c, w in cfg.category_weights.items() if w > 0]
    weights = np.array([cfg.category_weights[c] for c in names], dtype=np.float64)
    for _ in range(1000):
        scene = sample_scene(rng, cfg)
        category = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        spec = sample_spec(scene, category, rng, cfg)
        if spec is not None:
            return scene, spec
    raise RuntimeError("no edit fits the sampled scenes: check the world parameters")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def reference(scene: Scene, shape_id: int, rng: np.random.Generator, by_position: bool = True) -> str:
    """A noun phrase naming the shape that no other shape in the scene fits
    ("the red circle", "the circle", "the red shape", "the circle at the top left")."""
    shape = scene.shape(shape_id)
    others = [s for s in scene.shapes if s.id != shape_id]
    options = [f"the {shape.color} {shape.kind}"]
    if by_position:
        options.append(f"the {shape.kind} at the {position_name(shape.row, shape.col, scene.grid_size)}")
    if all(s.kind != shape.kind for s in others):
        options.append(f"the {shape.kind}")
    if all(s.color != shape.color for s in others):
        options.append(f"the {shape.color} shape")
    return _pick(rng, options)


def shapes_matching(phrase: str, scene: Scene) -> list[int]:
    """Ids of the shapes that a reference phrase fits (by colour, kind and position words)."""
    text = phrase.lower()
    position = None
    names = {n for row in POSITION_NAMES[scene.grid_size] for n in row}
    for name in sorted(names, key=lambda n: (-len(n), n)):  # "top left" before "top"
        if re.search(rf"\b{name}\b", text):
            position, text = name, re.sub(rf"\b{name}\b", " ", text)
            break
    colors = [c for c in SHAPE_COLORS if re.search(rf"\b{c}\b", text)]
    kinds = [k for k in SHAPE_KINDS if re.search(rf"\b{k}\b", text)]
    return [
        s.id
        for s in scene.shapes
        if all(c == s.color for c in colors)
        and all(k == s.kind for k in kinds)
        and (position is None or position == position_name(s.row, s.col, scene.grid_size))
    ]


_TEMPLATES = {
    "color_alteration": (
        "Change {ref} to {color}.",
        "Make {ref} {color}.",
        "Recolor {ref} {color}.",
        "Paint {ref} {color}.",
        "Change the color of {ref} to {color}.",
        "Turn {ref} {color}.",
    ),
    "subject_addition": (
        "Add {a_color} {color} {kind} at the {where}.",
        "Place {a_color} {color} {kind} at the {where}.",
        "Draw {a_color} {color} {kind} at the {where}.",
        "Put {a_color} {color} {kind} at the {where} of the picture.",
        "Insert {a_color} {color} {kind} at the {where}.",
    ),
    "subject_removal": (
        "Remove {ref}.",
        "Delete {ref}.",
        "Erase {ref}.",
        "Get rid of {ref}.",
        "Take {ref} out of the picture.",
    ),
    "subject_replacement": (
        "Replace {ref} with {a_old_color} {old_color} {kind}.",
        "Turn {ref} into {a_kind} {kind} of the same color.",
        "Swap {ref} for {a_old_color} {old_color} {kind}.",
        "Change {ref} into {a_old_color} {old_color} {kind}.",
    ),
    "background_change": (
        "Change the background to {background}.",
        "Make the background {background}.",
        "Set the background color to {background}.",
        "Paint the background {background}.",
        "Replace the background with {a_background} {background} one.",
    ),
    "motion_change": (
        "Move {ref} to the {where}.",
        "Shift {ref} to the {where}.",
        "Put {ref} at the {where}.",
        "Relocate {ref} to the {where}.",
        "Drag {ref} over to the {where}.",
    ),
}


def instruction_and_reference(spec: EditSpec, scene: Scene, rng: np.random.Generator) -> tuple[str, str | None]:
    """The instruction for `spec` on `scene` and the noun phrase in it that names the target
    (None for categories without a target shape)."""
    # "Move the star at the left to the top right" reads badly: motion never names by position.
    by_position = spec.category != "motion_change"
    ref = None if spec.target is None else reference(scene, spec.target, rng, by_position)
    target = None if spec.target is None else scene.shape(spec.target)
    values = {
        "ref": ref,
        "color": spec.color,
        "a_color": _article(spec.color) if spec.color else None,
        "kind": spec.kind,
        "a_kind": _article(spec.kind) if spec.kind else None,
        "old_color": target.color if target else None,
        "a_old_color": _article(target.color) if target else None,
        "where": None if spec.position is None else position_name(*spec.position, scene.grid_size),
        "background": spec.background,
        "a_background": _article(spec.background) if spec.background else None,
    }
    text = _pick(rng, list(_TEMPLATES[spec.category])).format(**values)
    return text[0].upper() + text[1:], ref


def instruction_text(spec: EditSpec, scene: Scene, rng: np.random.Generator) -> str:
    """One phrasing of the instruction, e.g. "Recolor the red circle blue."."""
    return instruction_and_reference(spec, scene, rng)[0]
