"""What the oracle teacher asks and writes: its checklist per edit category and its wording.

`checklist(source, spec)` gives ten `Check`s per context — 4 follow, 3 keep, 3 quality — each a
principle (the question), the fact behind it (`verdict`, a function of a `View`), its `role` in
the facts an answer pattern implies (see `editr1.teachers.oracle`), and the short label and
observed value of its verdict line ("circle colour: blue. yes"). Every fact gets its own verdict:
the requested value, the edited target, completeness (no half blend, half move, half size) and
"changed at all" are separate questions, so wrong colour, partial and no change never share a
pattern (FINDINGS.md). Keep questions split unrequested changes by where they land (the target's
other attributes, the other shapes, the background) so each extra change fails exactly one.

`describe(scene, effects)` is the compact scene description the reasoning opens with
("red circle top left, blue square center, on gray"), and `TEMPLATES` the few phrasings of the
reasoning; what the words describe is decided by the teacher (its perception), not here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from editr1.rrm.principles import Principle
from editr1.world.facts import EditFacts
from editr1.world.instructions import EditSpec
from editr1.world.scene import NO_EFFECTS, ImageEffects, Scene, Shape, position_name, strictly_between

ROLES = ("attribute", "target", "complete", "changed", "keep", "noise", "blur", "border")


@dataclass(frozen=True)
class View:
    """An edit as someone sees it: both scene graphs, the request, image effects, and the facts
    `edit_facts` computes from them (the truth, or the teacher's perception of it)."""

    source: Scene
    edited: Scene
    spec: EditSpec
    effects: ImageEffects
    facts: EditFacts


@dataclass(frozen=True)
class Check:
    """One principle and the fact check behind it."""

    principle: Principle
    role: str
    label: str
    verdict: Callable[[View], bool]
    value: Callable[[View], str]


# --- small views of a scene -----------------------------------------------------------------

def paint_name(color: str, blend_to: str | None, blend: float) -> str:
    return f"{color}-{blend_to}" if blend_to and blend else color


def _paint(s: Shape) -> str:
    return paint_name(s.color, s.blend_to, s.blend)


def _where(s: Shape, grid: int) -> str:
    return position_name(s.row, s.col, grid)


def _shape(s: Shape, grid: int) -> str:
    return f"{'small ' if s.scale < 1 else ''}{_paint(s)} {s.kind} {_where(s, grid)}"


def _background(scene: Scene) -> str:
    return paint_name(scene.background, scene.background_blend_to, scene.background_blend)


def describe(scene: Scene, effects: ImageEffects, target: int | None = None) -> str:
    """E.g. "red circle top left, small blue square center, on gray; white border".

    Shapes are named in reading order (top to bottom, left to right), so the description is a
    function of the image: listed in the scene's creation order, the first shape named would be any
    of them, and a tiny RRM learns only which words are likely, not to read the image. With a
    `target` id, that shape's entry opens with "target " (`TeacherConfig.mark_target`).
    """
    shapes = ", ".join(_marked(s.id, target, _shape(s, scene.grid_size))
                       for s in _reading_order(scene.shapes)) or "no shapes"
    return f"{shapes}, on {_background(scene)}{_damage(effects)}"


def _marked(shape_id: int, target: int | None, entry: str) -> str:
    return f"target {entry}" if shape_id == target else entry


def _reading_order(shapes: Iterable[Shape]) -> list[Shape]:
    return sorted(shapes, key=lambda s: (s.row, s.col, s.id))


def _damage(effects: ImageEffects) -> str:
    """"; noisy; blurry; white border" — the damage an image shows, in that order ("" for none)."""
    return "".join(f"; {w}" for w, on in (("noisy", effects.noise_std > 0), ("blurry", effects.blur > 0),
                                           ("white border", effects.border > 0)) if on)


def _side(a: str, b: str) -> str:
    return f"{a} → {'same' if a == b else b}"


def describe_changes(source: Scene, edited: Scene, effects: ImageEffects, target: int | None = None) -> str:
    """Both images side by side, e.g. "red circle top left → green circle top left, blue square
    center → same, new small star bottom, on gray → same; blurry".

    Each source shape (reading order) is followed by what became of it ("gone" when it left), then
    the shapes that appeared, then the background and the edited image's damage. Every word a check
    line needs sits next to the word it is compared with, instead of ~30 tokens away in the other
    image's description (`reasoning_style: side_by_side`; README: what it changed). With a `target`
    id, the instruction's target opens with "target " ("target red circle top left → same"), so the
    check lines that ask about the target can read its entry instead of guessing it from the
    instruction or from the shape that changed (`TeacherConfig.mark_target`; README).
    """
    grid = source.grid_size
    after = {s.id: _shape(s, grid) for s in edited.shapes}
    parts = [_marked(s.id, target, _side(_shape(s, grid), after.get(s.id, "gone")))
             for s in _reading_order(source.shapes)]
    parts += [f"new {_shape(s, grid)}" for s in _reading_order(s for s in edited.shapes if s.id not in source.ids())]
    background = _side(_background(source), _background(edited))
    return f"{', '.join(parts or ['no shapes'])}, on {background}{_damage(effects)}"


def _after(v: View, shape_id: int | None) -> Shape | None:
    return next((s for s in v.edited.shapes if s.id == shape_id), None)


def _locus(v: View) -> Shape | None:
    """The added shape that is the edit (as `edit_facts` picks it)."""
    added = [s for s in v.edited.shapes if s.id not in v.source.ids() and s.kind == v.spec.kind]
    added.sort(key=lambda s: (s.color != v.spec.color, s.scale != 1.0, s.id))
    return added[0] if added else None


def _shape_changes(a: Shape, b: Shape | None, attrs: tuple[str, ...]) -> list[str]:
    """What happened to one source shape, in words ("red square now green")."""
    name = f"{_paint(a)} {a.kind}"
    if b is None:
        return [f"{name} gone"]
    out = []
    if "paint" in attrs and _paint(a) != _paint(b):
        out.append(f"{name} now {_paint(b)}")
    if "kind" in attrs and a.kind != b.kind:
        out.append(f"{name} now {b.kind}")
    if "place" in attrs and (a.row, a.col) != (b.row, b.col):
        out.append(f"{name} moved")
    if "size" in attrs and a.scale != b.scale:
        out.append(f"{name} resized")
    return out


ALL_ATTRS = ("paint", "kind", "place", "size")


def _changes(v: View, ids: list[int], attrs: tuple[str, ...] = ALL_ATTRS, new: bool = False) -> list[str]:
    """Changes to the source shapes `ids` (and, when `new`, shapes that appeared, but the locus)."""
    out = [c for i in ids for c in _shape_changes(v.source.shape(i), _after(v, i), attrs)]
    if new:
        locus = _locus(v) if v.spec.category == "subject_addition" else None
        out += [f"new {s.kind}" for s in v.edited.shapes if s.id not in v.source.ids() and s is not locus]
    return out


def _others(v: View) -> list[int]:
    return [i for i in v.source.ids() if i != v.spec.target]


def _same(changes: list[str], empty: str = "same") -> str:
    return ", ".join(changes) if changes else empty


def _acted(v: View, attrs: tuple[str, ...]) -> str:
    """Which source shapes changed in `attrs` (or vanished), by kind."""
    kinds = [s.kind for s in v.source.shapes if _shape_changes(s, _after(v, s.id), attrs)]
    return ", ".join(kinds) or "none"


def _bg_same(v: View) -> bool:
    return _background(v.source) == _background(v.edited)


# --- checks shared by categories --------------------------------------------------------------

def _changed() -> Check:
    return Check(Principle("Is the image changed from the source?", "follow"), "changed", "vs source",
                 lambda v: v.facts.changed, lambda v: "different" if v.facts.changed else "same")


def _other_shapes(question: str = "Are the other shapes unchanged?", new: bool = True) -> Check:
    return Check(Principle(question, "keep"), "keep", "other shapes",
                 lambda v: not _changes(v, _others(v), new=new),
                 lambda v: _same(_changes(v, _others(v), new=new), "same" if _others(v) else "none"))


def _nothing_added(question: str) -> Check:
    return Check(Principle(question, "keep"), "keep", "new shapes",
                 lambda v: not _changes(v, [], new=True), lambda v: _same(_changes(v, [], new=True), "none"))


def _background_kept() -> Check:
    return Check(Principle("Is the background unchanged?", "keep"), "keep", "background", _bg_same,
                 lambda v: f"{_background(v.edited)}, " + ("same" if _bg_same(v) else f"was {_background(v.source)}"))


def _target_rest(question: str, label: str, attrs: tuple[str, ...]) -> Check:
    def changes(v: View) -> list[str]:
        return _changes(v, [v.spec.target], attrs)

    return Check(Principle(question, "keep"), "keep", label, lambda v: not changes(v), lambda v: _same(changes(v)))


QUALITY = (
    Check(Principle("Is the image free of noise?", "quality"), "noise", "noise",
          lambda v: v.effects.noise_std == 0, lambda v: "none" if v.effects.noise_std == 0 else "noisy"),
    Check(Principle("Is the image sharp, not blurred?", "quality"), "blur", "blur",
          lambda v: v.effects.blur == 0, lambda v: "none" if v.effects.blur == 0 else "blurry"),
    Check(Principle("Is the image free of a white border?", "quality"), "border", "border",
          lambda v: v.effects.border == 0, lambda v: "none" if v.effects.border == 0 else "white"),
)


# --- per category ---------------------------------------------------------------------------

def _target_value(v: View) -> str:
    after = _after(v, v.spec.target)
    return "gone" if after is None else f"{'small ' if after.scale < 1 else ''}{_paint(after)} {after.kind}"


def _color_alteration(src: Scene, spec: EditSpec, ref: str, kind: str) -> list[Check]:
    def blended(v: View) -> bool:
        after = _after(v, spec.target)
        return after is not None and after.blend > 0

    return [
        Check(Principle(f"Is {ref} now {spec.color}?", "follow"), "attribute", f"{kind} colour",
              lambda v: v.facts.attribute_right,
              lambda v: "gone" if _after(v, spec.target) is None else _paint(_after(v, spec.target))),
        Check(Principle(f"Is the colour change made to {ref} and not another shape?", "follow"), "target",
              "recoloured", lambda v: v.facts.target_right, lambda v: _acted(v, ("paint",))),
        Check(Principle(f"Is the new colour of the {kind} solid, not a half blend?", "follow"), "complete",
              "blend", lambda v: not blended(v), lambda v: _paint(_after(v, spec.target)) if blended(v) else "none"),
        _changed(),
        _target_rest(f"Are the shape, size and position of {ref} unchanged?", f"{kind} shape, place",
                     ("kind", "place", "size")),
        _other_shapes(),
        _background_kept(),
    ]


def _subject_replacement(src: Scene, spec: EditSpec, ref: str, kind: str) -> list[Check]:
    before = src.shape(spec.target)

    def size(v: View) -> str:
        after = _after(v, spec.target)
        return "gone" if after is None else ("small" if after.scale < before.scale else "full")

    return [
        Check(Principle(f"Is {ref} now {_a(spec.kind)} {spec.kind}?", "follow"), "attribute", "replaced",
              lambda v: v.facts.attribute_right, _target_value),
        Check(Principle(f"Is the replacement made to {ref} and not another shape?", "follow"), "target",
              "reshaped", lambda v: v.facts.target_right, lambda v: _acted(v, ("kind",))),
        Check(Principle(f"Is the new {spec.kind} full size?", "follow"), "complete", "size",
              lambda v: size(v) == "full", size),
        _changed(),
        _target_rest(f"Does the new shape keep the colour and position of {ref}?", "colour, place",
                     ("paint", "place")),
        _other_shapes(),
        _background_kept(),
    ]


def _motion_change(src: Scene, spec: EditSpec, ref: str, kind: str) -> list[Check]:
    before = src.shape(spec.target)
    where = position_name(*spec.position, src.grid_size)

    def move(v: View) -> str:
        after = _after(v, spec.target)
        if after is None or (after.row, after.col) == (before.row, before.col):
            return "none"
        half = strictly_between((before.row, before.col), (after.row, after.col), spec.position)
        return "half-way" if half else "full"

    return [
        Check(Principle(f"Is {ref} now at the {where}?", "follow"), "attribute", f"{kind} place",
              lambda v: v.facts.attribute_right,
              lambda v: "gone" if _after(v, spec.target) is None else _where(_after(v, spec.target), src.grid_size)),
        Check(Principle(f"Is {ref} the shape that moved?", "follow"), "target", "moved",
              lambda v: v.facts.target_right, lambda v: _acted(v, ("place",))),
        Check(Principle(f"Did the {kind} move all the way, not stop half-way?", "follow"), "complete", "move",
              lambda v: move(v) != "half-way", move),
        _changed(),
        _target_rest(f"Are the colour, shape and size of {ref} unchanged?", f"{kind} look",
                     ("paint", "kind", "size")),
        _other_shapes(),
        _background_kept(),
    ]


def _subject_removal(src: Scene, spec: EditSpec, ref: str, kind: str) -> list[Check]:
    def ghost(v: View) -> str:
        after = _after(v, spec.target)
        return _target_value(v) if after is not None and after.blend > 0 else "none"

    return [
        Check(Principle(f"Is {ref} removed?", "follow"), "attribute", kind,
              lambda v: v.facts.attribute_right, _target_value),
        Check(Principle(f"Is the removal made to {ref} and not another shape?", "follow"), "target", "edited",
              lambda v: v.facts.target_right, lambda v: _acted(v, ALL_ATTRS)),
        Check(Principle(f"Is there no faded trace of {ref}?", "follow"), "complete", "ghost",
              lambda v: ghost(v) == "none", ghost),
        _changed(),
        _other_shapes(new=False),
        _nothing_added("Is nothing new added?"),
        _background_kept(),
    ]


def _subject_addition(src: Scene, spec: EditSpec, ref: str, kind: str) -> list[Check]:
    k = spec.kind
    where = position_name(*spec.position, src.grid_size)

    def at(v: View, what: Callable[[Shape], str]) -> str:
        locus = _locus(v)
        return "none" if locus is None else what(locus)

    return [
        Check(Principle(f"Is {_a(k)} {k} added?", "follow"), "target", f"new {k}",
              lambda v: v.facts.target_right, lambda v: at(v, lambda s: "added")),
        Check(Principle(f"Is the new {k} {spec.color}?", "follow"), "attribute", f"{k} colour",
              lambda v: at(v, _paint) == spec.color, lambda v: at(v, _paint)),
        Check(Principle(f"Is the new {k} at the {where}?", "follow"), "attribute", f"{k} place",
              lambda v: at(v, lambda s: _where(s, src.grid_size)) == where,
              lambda v: at(v, lambda s: _where(s, src.grid_size))),
        Check(Principle(f"Is the new {k} full size?", "follow"), "complete", f"{k} size",
              lambda v: at(v, lambda s: "full" if s.scale >= 1 else "small") == "full",
              lambda v: at(v, lambda s: "full" if s.scale >= 1 else "small")),
        _other_shapes("Are the existing shapes unchanged?", new=False),
        _nothing_added("Is nothing else added?"),
        _background_kept(),
    ]


def _background_change(src: Scene, spec: EditSpec, ref: str, kind: str) -> list[Check]:
    def part(v: View) -> str:
        parts = ["background"] if not _bg_same(v) else []
        parts += ["shapes"] if _changes(v, list(v.source.ids()), new=True) else []
        return ", ".join(parts) or "none"

    def shapes(attrs: tuple[str, ...]) -> Callable[[View], list[str]]:
        return lambda v: [c for c in _changes(v, list(v.source.ids()), attrs) if not c.endswith(" gone")]

    colours, forms = shapes(("paint",)), shapes(("kind", "place", "size"))

    def count(v: View) -> str:
        n, m = len(v.source.shapes), len(v.edited.shapes)
        return f"{m}, same" if set(v.source.ids()) == set(v.edited.ids()) else f"{m}, was {n}"

    return [
        Check(Principle(f"Is the background now {spec.background}?", "follow"), "attribute", "background",
              lambda v: v.facts.attribute_right, lambda v: _background(v.edited)),
        Check(Principle("Is the change made to the background and not a shape?", "follow"), "target",
              "changed part", lambda v: v.facts.target_right, part),
        Check(Principle("Is the new background one solid colour, not a blend?", "follow"), "complete", "blend",
              lambda v: v.edited.background_blend == 0,
              lambda v: _background(v.edited) if v.edited.background_blend else "none"),
        _changed(),
        Check(Principle("Do all shapes keep their colours?", "keep"), "keep", "shape colours",
              lambda v: not colours(v), lambda v: _same(colours(v))),
        Check(Principle("Do all shapes keep their kind, size and position?", "keep"), "keep", "shape forms",
              lambda v: not forms(v), lambda v: _same(forms(v))),
        Check(Principle("Are no shapes added or removed?", "keep"), "keep", "shape count",
              lambda v: set(v.source.ids()) == set(v.edited.ids()), count),
    ]


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


_BUILDERS: dict[str, Callable[[Scene, EditSpec, str, str], list[Check]]] = {
    "color_alteration": _color_alteration,
    "subject_replacement": _subject_replacement,
    "motion_change": _motion_change,
    "subject_removal": _subject_removal,
    "subject_addition": _subject_addition,
    "background_change": _background_change,
}


def checklist(source: Scene, spec: EditSpec) -> list[Check]:
    """The oracle's ten checks for one context, in order: follow, keep, quality."""
    if spec.category not in _BUILDERS:
        raise ValueError(f"unknown category {spec.category!r}")
    ref = kind = ""
    if spec.target is not None:
        target = source.shape(spec.target)
        # (colour, kind) is unique in a world scene, so this names exactly one shape.
        ref, kind = f"the {target.color} {target.kind}", target.kind
    return [*_BUILDERS[spec.category](source, spec, ref, kind), *QUALITY]


# --- the reasoning's phrasings ----------------------------------------------------------------

@dataclass(frozen=True)
class Template:
    """One phrasing of a trace's reasoning: the two descriptions, then one line per verdict."""

    header: str  # .format(source=..., edited=...)
    line: str  # .format(i=..., label=..., value=..., verdict=...)


TEMPLATES = (
    Template("source: {source}. edited: {edited}.", "{i}. {label}: {value}. {verdict}"),
    Template("before: {source}. after: {edited}.", "{i}. {label}: {value} - {verdict}"),
    Template("the source shows {source}. the edit shows {edited}.", "{i}) {label}: {value}, so {verdict}"),
)

# The same phrasings for `reasoning_style: side_by_side`: one description of both images
# (`describe_changes`) in place of two; {edited} is unused.
SIDE_BY_SIDE_TEMPLATES = (
    Template("source → edited: {source}.", "{i}. {label}: {value}. {verdict}"),
    Template("before → after: {source}.", "{i}. {label}: {value} - {verdict}"),
    Template("what changed: {source}.", "{i}) {label}: {value}, so {verdict}"),
)


def descriptions(style: str, source: Scene, edited: Scene, effects: ImageEffects,
                 target: int | None = None) -> tuple[tuple[Template, ...], str, str]:
    """The phrasings and the {source} and {edited} texts of a trace in `TeacherConfig.reasoning_style`;
    `target` (a source shape id, or None) is marked in the source's entries."""
    if style == "side_by_side":
        return SIDE_BY_SIDE_TEMPLATES, describe_changes(source, edited, effects, target), ""
    return TEMPLATES, describe(source, NO_EFFECTS, target), describe(edited, effects)


def write_reasoning(template: Template, source: str, edited: str, lines: list[tuple[str, str, bool]]) -> str:
    """The reasoning text: descriptions, then "{i}. {label}: {value}. yes|no" per principle."""
    body = [template.line.format(i=i, label=label, value=value, verdict="yes" if ok else "no")
            for i, (label, value, ok) in enumerate(lines, start=1)]
    return "\n".join([template.header.format(source=source, edited=edited), *body])
