"""The truth about one edit, computed from the scene graphs: what an oracle knows.

`edit_facts(source, spec, edited, effects)` compares the edited scene with the source and the
request — never with the label of the editor that made it — and says whether the requested
change was made, to the right thing, with the right value, only half-way, what else changed,
and whether the image carries artefacts or a border. The oracle teacher and the editor's
reward read these facts; `requested` / `observed` / `unrequested` are the words for them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from editr1.world.instructions import EditSpec
from editr1.world.scene import (
    NO_EFFECTS,
    ImageEffects,
    Scene,
    Shape,
    background_name,
    describe_shape,
    position_name,
    shape_color_name,
    strictly_between,
)


@dataclass(frozen=True)
class EditFacts:
    """Per-fact truth of an edit.

    requested_done: the requested change is there in full. target_right: the edit acted on
    what was asked (the target shape, an added shape of the requested kind, the background).
    attribute_right: the requested value is right (colour, kind, cell, background; for
    addition colour and cell; for removal: gone). partial: the right change, only part-way.
    changed: the scene differs from the source at all. unrequested_changes: how many things
    changed that nobody asked for (`unrequested` says which). artifact / border: image damage.
    """

    category: str
    requested_done: bool
    target_right: bool
    attribute_right: bool
    partial: bool
    changed: bool
    unrequested_changes: int
    artifact: bool
    border: bool
    requested: str
    observed: str
    unrequested: tuple[str, ...]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["unrequested"] = list(self.unrequested)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> EditFacts:
        return cls(**{**data, "unrequested": tuple(data["unrequested"])})


def _paint(s: Shape) -> tuple:
    return (s.color, s.blend_to, s.blend) if s.blend else (s.color, None, 0.0)


def _background(scene: Scene) -> tuple:
    if scene.background_blend:
        return (scene.background, scene.background_blend_to, scene.background_blend)
    return (scene.background, None, 0.0)


def _diff(a: Shape, b: Shape) -> set[str]:
    """Which attributes of one shape differ between two scenes."""
    out = set()
    if a.kind != b.kind:
        out.add("kind")
    if _paint(a) != _paint(b):
        out.add("paint")
    if (a.row, a.col) != (b.row, b.col):
        out.add("position")
    if a.scale != b.scale:
        out.add("scale")
    return out


def _say_change(a: Shape, b: Shape, attr: str, grid: int) -> str:
    name = f"the {a.color} {a.kind}"
    if attr == "kind":
        return f"{name} became a {b.kind}"
    if attr == "paint":
        return f"{name} changed colour from {shape_color_name(a)} to {shape_color_name(b)}"
    if attr == "position":
        return f"{name} moved from {position_name(a.row, a.col, grid)} to {position_name(b.row, b.col, grid)}"
    return f"{name} changed size"


def _target_facts(source: Scene, spec: EditSpec, edited: Scene) -> tuple[bool, bool, bool, str, str, list[str]]:
    """(target_right, attribute_right, partial, requested, observed, unrequested at the target)
    for the categories that act on one existing shape."""
    grid = source.grid_size
    before = source.shape(spec.target)
    after = edited.shape(spec.target) if spec.target in edited.ids() else None
    c = spec.category
    requested = {
        "color_alteration": spec.color,
        "subject_replacement": spec.kind,
        "motion_change": None if spec.position is None else position_name(*spec.position, grid),
        "subject_removal": "removed",
    }[c]
    if after is None:
        return True, c == "subject_removal", False, requested, "removed", []
    attrs = _diff(before, after)
    acted = bool(attrs)
    if c == "subject_removal":
        faded = after.color == before.color and after.blend_to == source.background and 0 < after.blend < 1
        shrunk = after.scale < before.scale
        partial = acted and attrs <= {"paint", "scale"} and ("paint" not in attrs or faded) and (
            "scale" not in attrs or shrunk
        )
        return acted, False, partial, requested, "still there: " + describe_shape(after, grid), []
    if c == "color_alteration":
        allowed = {"paint"}
        right = _paint(after) == (spec.color, None, 0.0)
        partial = after.color == before.color and after.blend_to == spec.color and 0 < after.blend < 1
        observed = shape_color_name(after)
    elif c == "subject_replacement":
        allowed = {"kind", "scale"}
        right = after.kind == spec.kind
        partial = right and after.scale < before.scale
        observed = ("small " if after.scale < 1 else "") + after.kind
    elif c == "motion_change":
        allowed = {"position"}
        right = (after.row, after.col) == tuple(float(x) for x in spec.position)
        partial = strictly_between((before.row, before.col), (after.row, after.col), spec.position)
        observed = position_name(after.row, after.col, grid)
    else:
        raise ValueError(f"unknown category {c!r}")
    extra = [_say_change(before, after, a, grid) for a in sorted(attrs - allowed)]
    return acted, right, partial, requested, observed, extra


def edit_facts(source: Scene, spec: EditSpec, edited: Scene, effects: ImageEffects = NO_EFFECTS) -> EditFacts:
    """What the edit `source` -> `edited` (+ image `effects`) did with respect to `spec`."""
    grid = source.grid_size
    unrequested: list[str] = []
    background_changed = _background(source) != _background(edited)
    if spec.category != "background_change" and background_changed:
        unrequested.append(f"the background changed from {background_name(source)} to {background_name(edited)}")

    added = [s for s in edited.shapes if s.id not in source.ids()]
    locus = None
    if spec.category == "subject_addition":
        # The added shape of the requested kind is the edit; prefer the one closest to the request.
        matches = sorted(
            (s for s in added if s.kind == spec.kind),
            key=lambda s: (s.color != spec.color, s.scale != 1.0, s.id),
        )
        locus = matches[0] if matches else None
    unrequested += [f"{describe_shape(s, grid)} appeared" for s in added if s is not locus]

    for before in source.shapes:
        if before.id == spec.target:
            continue
        if before.id not in edited.ids():
            unrequested.append(f"{describe_shape(before, grid)} disappeared")
            continue
        after = edited.shape(before.id)
        unrequested += [_say_change(before, after, a, grid) for a in sorted(_diff(before, after))]

    c = spec.category
    if c == "background_change":
        target_right = background_changed
        attribute_right = _background(edited) == (spec.background, None, 0.0)
        partial = (
            edited.background == source.background
            and edited.background_blend_to == spec.background
            and 0 < edited.background_blend < 1
        )
        requested, observed = spec.background, background_name(edited)
    elif c == "subject_addition":
        where = position_name(*spec.position, grid)
        requested = f"a {spec.color} {spec.kind} at the {where}"
        if locus is None:
            target_right = attribute_right = partial = False
            observed = "nothing added"
        else:
            target_right = True
            attribute_right = _paint(locus) == (spec.color, None, 0.0) and (locus.row, locus.col) == tuple(
                float(x) for x in spec.position
            )
            partial = attribute_right and locus.scale < 1.0
            observed = describe_shape(locus, grid)
    else:
        facts = _target_facts(source, spec, edited)
        target_right, attribute_right, partial, requested, observed, at_target = facts
        unrequested += at_target

    return EditFacts(
        category=c,
        requested_done=attribute_right and not partial,
        target_right=target_right,
        attribute_right=attribute_right,
        partial=partial,
        changed=edited != source,
        unrequested_changes=len(unrequested),
        artifact=effects.artifact,
        border=effects.has_border,
        requested=requested,
        observed=observed,
        unrequested=tuple(unrequested),
    )
