"""Programmatic editors: the correct edit and editors with known failure modes.

`apply(scene, spec, kind, rng)` returns the edited scene graph and the image-level effects to
put on its rendering. Kinds (`CANDIDATE_KINDS`):

- ``correct``: exactly the request.
- ``wrong_color``: the requested attribute gets a wrong value — another colour (colour change,
  addition, background), another kind (replacement; for removal the target is changed into
  another kind instead of removed), another cell (motion).
- ``wrong_object``: the edit lands on another shape (for addition: another kind is added; for
  background change: a shape is recoloured instead of the background).
- ``extra_change``: the correct edit plus one unrequested change to another shape or the
  background (this is also how the editor's over-edited training targets are made).
- ``no_change``: the source, untouched.
- ``partial``: half the effect — colour / background blended half-way, a move stopped half-way,
  an added or replacing shape at half size, a removed shape only faded half-way.
- ``artifact``: the correct edit plus Gaussian noise or blur on the image.
- ``white_border``: the correct edit plus a white frame a few pixels wide.

Which kind produced an edit is recorded by the caller; `editr1.world.facts` recomputes what
an edit did from the scene graphs alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from editr1.world.instructions import EditSpec
from editr1.world.params import CANDIDATE_KINDS, WorldConfig
from editr1.world.scene import NO_EFFECTS, ImageEffects, Scene, Shape, is_free, strictly_between

Edit = tuple[Scene, ImageEffects]


@dataclass(frozen=True)
class Candidate:
    """One candidate edit of a context: its kind, edited scene graph and image effects."""

    kind: str
    scene: Scene
    effects: ImageEffects


def _pick(rng: np.random.Generator, options: list):
    return options[int(rng.integers(len(options)))] if options else None


def _taken(scene: Scene, ignore_id: int | None = None) -> set[tuple[str, str]]:
    return {(s.color, s.kind) for s in scene.shapes if s.id != ignore_id}


def _added(spec: EditSpec, scene: Scene, **changes) -> Shape:
    row, col = spec.position
    base = Shape(id=scene.next_id(), kind=spec.kind, color=spec.color, row=float(row), col=float(col))
    return replace(base, **changes)


def correct_edit(source: Scene, spec: EditSpec) -> Scene:
    """The scene exactly as the instruction asks."""
    c = spec.category
    if c == "background_change":
        return replace(source, background=spec.background)
    if c == "subject_addition":
        return source.plus(_added(spec, source))
    if c == "subject_removal":
        return source.without(spec.target)
    target = source.shape(spec.target)
    if c == "color_alteration":
        return source.with_shape(replace(target, color=spec.color))
    if c == "subject_replacement":
        return source.with_shape(replace(target, kind=spec.kind))
    if c == "motion_change":
        return source.with_shape(replace(target, row=float(spec.position[0]), col=float(spec.position[1])))
    raise ValueError(f"unknown category {c!r}")


def _recolor(scene: Scene, shape: Shape, cfg: WorldConfig, rng, avoid: tuple[str, ...] = ()) -> Scene | None:
    taken = _taken(scene, shape.id)
    colors = [c for c in cfg.colors if c != shape.color and c not in avoid and (c, shape.kind) not in taken]
    color = _pick(rng, colors)
    return None if color is None else scene.with_shape(replace(shape, color=color))


def _rekind(scene: Scene, shape: Shape, cfg: WorldConfig, rng, avoid: tuple[str, ...] = ()) -> Scene | None:
    taken = _taken(scene, shape.id)
    kinds = [k for k in cfg.shape_kinds if k != shape.kind and k not in avoid and (shape.color, k) not in taken]
    kind = _pick(rng, kinds)
    return None if kind is None else scene.with_shape(replace(shape, kind=kind))


def _move(scene: Scene, shape: Shape, rng, avoid: tuple = ()) -> Scene | None:
    cells = [c for c in scene.free_cells() if c not in avoid and c != (shape.row, shape.col)]
    cell = _pick(rng, cells)
    return None if cell is None else scene.with_shape(replace(shape, row=float(cell[0]), col=float(cell[1])))


def _others(scene: Scene, spec: EditSpec) -> list[Shape]:
    return [s for s in scene.shapes if s.id != spec.target]


def _correct(source: Scene, spec: EditSpec, rng, cfg: WorldConfig) -> Edit:
    return correct_edit(source, spec), NO_EFFECTS


def _wrong_attribute(source: Scene, spec: EditSpec, rng, cfg: WorldConfig) -> Edit | None:
    c = spec.category
    if c == "background_change":
        options = [b for b in cfg.backgrounds if b not in (spec.background, source.background)]
        bg = _pick(rng, options)
        return None if bg is None else (replace(source, background=bg), NO_EFFECTS)
    if c == "subject_addition":
        taken = _taken(source)
        colors = [x for x in cfg.colors if x != spec.color and (x, spec.kind) not in taken]
        color = _pick(rng, colors)
        return None if color is None else (source.plus(_added(spec, source, color=color)), NO_EFFECTS)
    target = source.shape(spec.target)
    if c == "color_alteration":
        edited = _recolor(source, target, cfg, rng, avoid=(spec.color,))
    elif c in ("subject_replacement", "subject_removal"):
        edited = _rekind(source, target, cfg, rng, avoid=(spec.kind,) if spec.kind else ())
    elif c == "motion_change":
        # Cells on the way to the destination would make a half-done move, not a wrong one.
        on_the_way = tuple(
            cell for cell in source.free_cells()
            if strictly_between((target.row, target.col), cell, spec.position)
        )
        edited = _move(source, target, rng, avoid=(spec.position, *on_the_way))
    else:
        raise ValueError(f"unknown category {c!r}")
    return None if edited is None else (edited, NO_EFFECTS)


def _wrong_object(source: Scene, spec: EditSpec, rng, cfg: WorldConfig) -> Edit | None:
    c = spec.category
    if c == "subject_addition":
        taken = _taken(source)
        kinds = [k for k in cfg.shape_kinds if k != spec.kind and (spec.color, k) not in taken]
        kind = _pick(rng, kinds)
        return None if kind is None else (source.plus(_added(spec, source, kind=kind)), NO_EFFECTS)
    if c == "background_change":
        shape = _pick(rng, list(source.shapes))
        edited = None if shape is None else _recolor(source, shape, cfg, rng)
        return None if edited is None else (edited, NO_EFFECTS)
    candidates = []
    for other in _others(source, spec):
        taken = _taken(source, other.id)
        if c == "subject_removal":
            candidates.append(source.without(other.id))
        elif c == "color_alteration" and other.color != spec.color and (spec.color, other.kind) not in taken:
            candidates.append(source.with_shape(replace(other, color=spec.color)))
        elif c == "subject_replacement" and other.kind != spec.kind and (other.color, spec.kind) not in taken:
            candidates.append(source.with_shape(replace(other, kind=spec.kind)))
        elif c == "motion_change":
            row, col = spec.position
            candidates.append(source.with_shape(replace(other, row=float(row), col=float(col))))
    edited = _pick(rng, candidates)
    return None if edited is None else (edited, NO_EFFECTS)


def unrequested_change(edited: Scene, spec: EditSpec, rng: np.random.Generator, cfg: WorldConfig) -> Scene | None:
    """`edited` plus one change nobody asked for: the background shifts to another colour
    (with probability `cfg.extra_change_background_prob`, never for a background edit), or
    another shape is recoloured or moved. None when no such change is possible."""
    if spec.category == "subject_addition":
        # The added shape carries the newest id; it is the edit itself, so leave it alone.
        newest = max(edited.ids())
        others = [s for s in edited.shapes if s.id != newest]
    else:
        others = [s for s in edited.shapes if s.id != spec.target]
    backgrounds = [b for b in cfg.backgrounds if b != edited.background]
    can_background = spec.category != "background_change" and bool(backgrounds)
    if can_background and (not others or rng.random() < cfg.extra_change_background_prob):
        return replace(edited, background=_pick(rng, backgrounds))
    for i in rng.permutation(len(others)):
        shape = others[int(i)]
        # Recolouring is the commoner over-edit (70% first choice); moving is the other.
        attempts = ("recolor", "move") if rng.random() < 0.7 else ("move", "recolor")
        for attempt in attempts:
            out = _recolor(edited, shape, cfg, rng) if attempt == "recolor" else _move(edited, shape, rng)
            if out is not None:
                return out
    return replace(edited, background=_pick(rng, backgrounds)) if can_background else None


def _extra_change(source: Scene, spec: EditSpec, rng, cfg: WorldConfig) -> Edit | None:
    edited = unrequested_change(correct_edit(source, spec), spec, rng, cfg)
    return None if edited is None else (edited, NO_EFFECTS)


def _no_change(source: Scene, spec: EditSpec, rng, cfg: WorldConfig) -> Edit:
    return source, NO_EFFECTS


def _partial(source: Scene, spec: EditSpec, rng, cfg: WorldConfig) -> Edit | None:
    c = spec.category
    if c == "background_change":
        return replace(source, background_blend_to=spec.background, background_blend=0.5), NO_EFFECTS
    if c == "subject_addition":
        return source.plus(_added(spec, source, scale=0.5)), NO_EFFECTS
    target = source.shape(spec.target)
    if c == "color_alteration":
        return source.with_shape(replace(target, blend_to=spec.color, blend=0.5)), NO_EFFECTS
    if c == "subject_replacement":
        return source.with_shape(replace(target, kind=spec.kind, scale=0.5)), NO_EFFECTS
    if c == "subject_removal":
        return source.with_shape(replace(target, blend_to=source.background, blend=0.5)), NO_EFFECTS
    if c == "motion_change":
        row, col = (target.row + spec.position[0]) / 2, (target.col + spec.position[1]) / 2
        if not is_free(source, (row, col), ignore_id=target.id):
            return None
        return source.with_shape(replace(target, row=row, col=col)), NO_EFFECTS
    raise ValueError(f"unknown category {c!r}")


def _artifact(source: Scene, spec: EditSpec, rng, cfg: WorldConfig) -> Edit:
    seed = int(rng.integers(2**31))
    if rng.random() < 0.5:
        effects = ImageEffects(noise_std=round(float(rng.uniform(18.0, 30.0)), 2), seed=seed)
    else:
        # Radius as a share of the side: about 1.1-1.7 px at 56 px, enough to soften edges.
        effects = ImageEffects(blur=round(float(rng.uniform(0.02, 0.03)), 4), seed=seed)
    return correct_edit(source, spec), effects


def _white_border(source: Scene, spec: EditSpec, rng, cfg: WorldConfig) -> Edit:
    # 5-8% of the side: 3-4 px at 56 px.
    return correct_edit(source, spec), ImageEffects(border=round(float(rng.uniform(0.05, 0.08)), 4))


EDITORS: dict[str, Callable[..., Edit | None]] = {
    "correct": _correct,
    "wrong_color": _wrong_attribute,
    "wrong_object": _wrong_object,
    "extra_change": _extra_change,
    "no_change": _no_change,
    "partial": _partial,
    "artifact": _artifact,
    "white_border": _white_border,
}


def apply(
    scene: Scene, spec: EditSpec, kind: str, rng: np.random.Generator, cfg: WorldConfig | None = None
) -> Edit:
    """Edit `scene` as the candidate `kind` would: (edited scene, image effects).

    Raises ValueError when the kind cannot apply here (see `applicable_kinds`)."""
    if kind not in EDITORS:
        raise ValueError(f"unknown candidate kind {kind!r}; expected one of {CANDIDATE_KINDS}")
    out = EDITORS[kind](scene, spec, rng, cfg or WorldConfig())
    if out is None:
        raise ValueError(f"candidate kind {kind!r} does not apply to this {spec.category} edit")
    return out


def applicable_kinds(scene: Scene, spec: EditSpec, cfg: WorldConfig | None = None) -> tuple[str, ...]:
    """Candidate kinds that can edit this context (e.g. wrong_object needs a second shape)."""
    cfg = cfg or WorldConfig()
    # A throwaway generator: applicability does not depend on the draws.
    return tuple(k for k in CANDIDATE_KINDS if EDITORS[k](scene, spec, np.random.default_rng(0), cfg) is not None)


def sample_candidates(scene: Scene, spec: EditSpec, rng: np.random.Generator, cfg: WorldConfig) -> list[Candidate]:
    """Up to `cfg.candidates_per_context` candidates of distinct kinds, drawn without
    replacement by `cfg.candidate_weights` among the kinds that apply."""
    kinds = [k for k in applicable_kinds(scene, spec, cfg) if cfg.candidate_weights.get(k, 0.0) > 0]
    weights = np.array([cfg.candidate_weights[k] for k in kinds], dtype=np.float64)
    n = min(cfg.candidates_per_context, len(kinds))
    picks = rng.choice(len(kinds), size=n, replace=False, p=weights / weights.sum())
    return [Candidate(kinds[int(i)], *apply(scene, spec, kinds[int(i)], rng, cfg)) for i in picks]
