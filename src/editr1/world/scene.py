"""Scene graphs of the shapes world and their deterministic rendering.

A scene is a background colour plus a few coloured shapes on a coarse grid whose cells have
names ("top left", "center", ...). Scenes are frozen dataclasses that round-trip through JSON
(`to_dict` / `from_dict`); `render(scene, size)` draws one as an RGB PIL image, and
`apply_effects` adds the image-level failures (noise, blur, white border) after rendering.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from editr1.world.params import BACKGROUND_COLORS, SHAPE_COLORS, WorldConfig

# Diameter of a full-size shape as a share of its grid cell: big, so a 56 px image still shows it.
CELL_FILL = 0.84
# Small images are drawn this many pixels wide and box-downsampled, for anti-aliased edges.
_SUPERSAMPLED_SIDE = 224
BORDER_RGB = (255, 255, 255)

POSITION_NAMES = {
    2: (("top left", "top right"), ("bottom left", "bottom right")),
    3: (
        ("top left", "top", "top right"),
        ("left", "center", "right"),
        ("bottom left", "bottom", "bottom right"),
    ),
}


@dataclass(frozen=True)
class Shape:
    """One shape; `id` follows it through edits. `row`/`col` are grid cells (floats mid-move);
    `blend` > 0 paints it part-way from `color` toward `blend_to` (a half-done recolour)."""

    id: int
    kind: str
    color: str
    row: float
    col: float
    scale: float = 1.0
    blend_to: str | None = None
    blend: float = 0.0

    @property
    def cell(self) -> tuple[float, float]:
        return (self.row, self.col)


@dataclass(frozen=True)
class Scene:
    """A background colour (possibly blended part-way to another) and its shapes."""

    background: str
    shapes: tuple[Shape, ...]
    grid_size: int = 3
    background_blend_to: str | None = None
    background_blend: float = 0.0

    def to_dict(self) -> dict:
        """JSON-safe dict (shapes as a list of dicts)."""
        out = asdict(self)
        out["shapes"] = [asdict(s) for s in self.shapes]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        """Inverse of `to_dict`."""
        fields = dict(data)
        fields["shapes"] = tuple(
            Shape(**{**s, "row": float(s["row"]), "col": float(s["col"])}) for s in data["shapes"]
        )
        return cls(**fields)

    def shape(self, shape_id: int) -> Shape:
        """The shape with this id (KeyError when absent)."""
        for s in self.shapes:
            if s.id == shape_id:
                return s
        raise KeyError(f"no shape with id {shape_id}")

    def ids(self) -> tuple[int, ...]:
        return tuple(s.id for s in self.shapes)

    def with_shape(self, new: Shape) -> Scene:
        """This scene with the shape of the same id replaced by `new`."""
        if new.id not in self.ids():
            raise KeyError(f"no shape with id {new.id}")
        return replace(self, shapes=tuple(new if s.id == new.id else s for s in self.shapes))

    def without(self, shape_id: int) -> Scene:
        """This scene with one shape removed."""
        if shape_id not in self.ids():
            raise KeyError(f"no shape with id {shape_id}")
        return replace(self, shapes=tuple(s for s in self.shapes if s.id != shape_id))

    def plus(self, shape: Shape) -> Scene:
        """This scene with `shape` added (its id must be new)."""
        if shape.id in self.ids():
            raise ValueError(f"shape id {shape.id} already in the scene")
        return replace(self, shapes=(*self.shapes, shape))

    def next_id(self) -> int:
        return max(self.ids(), default=-1) + 1

    def free_cells(self) -> list[tuple[int, int]]:
        """Grid cells no shape occupies, in row-major order."""
        return [
            (r, c)
            for r in range(self.grid_size)
            for c in range(self.grid_size)
            if is_free(self, (r, c))
        ]


def is_free(scene: Scene, cell: tuple[float, float], ignore_id: int | None = None) -> bool:
    """True when a full-size shape at `cell` would overlap no shape (other than `ignore_id`).

    Shapes are at most one cell wide, so a Chebyshev distance of 1 cell keeps them apart."""
    return all(
        max(abs(s.row - cell[0]), abs(s.col - cell[1])) >= 1.0 - 1e-9
        for s in scene.shapes
        if s.id != ignore_id
    )


def strictly_between(start: tuple[float, float], point: tuple[float, float], goal: tuple[float, float]) -> bool:
    """True when `point` lies on the straight path from `start` to `goal`, at neither end
    (where a move stopped part-way leaves a shape)."""
    vx, vy = goal[0] - start[0], goal[1] - start[1]
    wx, wy = point[0] - start[0], point[1] - start[1]
    length2 = vx * vx + vy * vy
    if length2 == 0 or abs(vx * wy - vy * wx) > 1e-9:
        return False
    t = (vx * wx + vy * wy) / length2
    return 1e-9 < t < 1 - 1e-9


def color_rgb(name: str) -> tuple[int, int, int]:
    """RGB of a shape or background colour name."""
    if name in SHAPE_COLORS:
        return SHAPE_COLORS[name]
    if name in BACKGROUND_COLORS:
        return BACKGROUND_COLORS[name]
    raise KeyError(f"unknown colour {name!r}")


def _mix(base: str, toward: str | None, amount: float) -> tuple[int, int, int]:
    a = color_rgb(base)
    if toward is None or amount == 0:
        return a
    b = color_rgb(toward)
    return tuple(int(round((1 - amount) * x + amount * y)) for x, y in zip(a, b))  # type: ignore[return-value]


def position_name(row: float, col: float, grid_size: int) -> str:
    """Name of a grid cell, or "between X and Y" for a shape stopped between two cells."""
    names = POSITION_NAMES[grid_size]
    lo = (math.floor(row + 1e-9), math.floor(col + 1e-9))
    hi = (math.ceil(row - 1e-9), math.ceil(col - 1e-9))
    if lo == hi:
        return names[lo[0]][lo[1]]
    return f"between {names[lo[0]][lo[1]]} and {names[hi[0]][hi[1]]}"


def shape_color_name(shape: Shape) -> str:
    """Colour as a person would name it ("red", or "red blended with blue")."""
    if shape.blend_to is None or shape.blend == 0:
        return shape.color
    return f"{shape.color} blended with {shape.blend_to}"


def background_name(scene: Scene) -> str:
    if scene.background_blend_to is None or scene.background_blend == 0:
        return scene.background
    return f"{scene.background} blended with {scene.background_blend_to}"


def describe_shape(shape: Shape, grid_size: int) -> str:
    """E.g. "a small red circle at the top left"."""
    words = ("small " if shape.scale < 1.0 else "") + f"{shape_color_name(shape)} {shape.kind}"
    where = position_name(shape.row, shape.col, grid_size)
    prep = "" if where.startswith("between") else "at the "
    article = "an" if words[0] in "aeiou" else "a"
    return f"{article} {words} {prep}{where}"


def describe_scene(scene: Scene) -> str:
    """One-sentence description of everything in the scene (what an oracle sees)."""
    shapes = [describe_shape(s, scene.grid_size) for s in scene.shapes]
    body = ", ".join(shapes) if shapes else "no shapes"
    return f"{body} on a {background_name(scene)} background"


def _polygon(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    def ring(n: int, radius: float, start_deg: float) -> list[tuple[float, float]]:
        return [
            (cx + radius * math.cos(math.radians(start_deg + 360 * i / n)),
             cy + radius * math.sin(math.radians(start_deg + 360 * i / n)))
            for i in range(n)
        ]

    if kind == "square":
        h = 0.86 * r  # a square of the circle's width looks bigger than it; shrink to match
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if kind == "triangle":
        # The centroid of a triangle sits low in its box: shift down so it looks centred.
        return [(x, y + 0.18 * r) for x, y in ring(3, r * 1.12, -90.0)]
    if kind == "star":
        outer, inner = ring(5, r * 1.05, -90.0), ring(5, r * 0.45, -54.0)
        return [p for pair in zip(outer, inner) for p in pair]
    if kind == "diamond":
        return [(cx, cy - r), (cx + 0.72 * r, cy), (cx, cy + r), (cx - 0.72 * r, cy)]
    if kind == "hexagon":
        return ring(6, r, 0.0)
    raise KeyError(f"unknown shape kind {kind!r}")


def render(scene: Scene, size: int = 56) -> Image.Image:
    """Draw the scene as a `size` x `size` RGB image; same scene and size, same pixels."""
    factor = max(1, math.ceil(_SUPERSAMPLED_SIDE / size))
    side = size * factor
    bg = _mix(scene.background, scene.background_blend_to, scene.background_blend)
    image = Image.new("RGB", (side, side), bg)
    draw = ImageDraw.Draw(image)
    cell = side / scene.grid_size
    for s in scene.shapes:
        cx, cy = (s.col + 0.5) * cell, (s.row + 0.5) * cell
        r = 0.5 * CELL_FILL * cell * s.scale
        fill = _mix(s.color, s.blend_to, s.blend)
        if s.kind == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        else:
            draw.polygon(_polygon(s.kind, cx, cy, r), fill=fill)
    if factor > 1:
        image = image.resize((size, size), Image.Resampling.BOX)
    return image


@dataclass(frozen=True)
class ImageEffects:
    """Image-level damage applied after rendering; sizes are shares of the image side so the
    same effects look alike at any resolution. `seed` fixes the noise."""

    noise_std: float = 0.0  # Gaussian pixel noise, in 0-255 units
    blur: float = 0.0  # Gaussian blur radius / image side
    border: float = 0.0  # white frame width / image side
    seed: int = 0

    @property
    def artifact(self) -> bool:
        return self.noise_std > 0 or self.blur > 0

    @property
    def has_border(self) -> bool:
        return self.border > 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ImageEffects:
        return cls(**data)


NO_EFFECTS = ImageEffects()


def apply_effects(image: Image.Image, effects: ImageEffects) -> Image.Image:
    """Blur, then noise, then the white border; deterministic given `effects.seed`."""
    size = image.width
    out = image
    if effects.blur > 0:
        out = out.filter(ImageFilter.GaussianBlur(radius=effects.blur * size))
    if effects.noise_std > 0:
        noise = np.random.default_rng(effects.seed).normal(0.0, effects.noise_std, (size, size, 3))
        pixels = np.asarray(out, dtype=np.float64) + noise
        out = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    if effects.border > 0:
        out = out.copy()
        width = max(1, round(effects.border * size))
        ImageDraw.Draw(out).rectangle((0, 0, size - 1, size - 1), outline=BORDER_RGB, width=width)
    return out


def render_edit(scene: Scene, effects: ImageEffects, size: int = 56) -> Image.Image:
    """Render a candidate edit: the scene, then its image-level effects."""
    return apply_effects(render(scene, size), effects)


def sample_scene(rng: np.random.Generator, cfg: WorldConfig) -> Scene:
    """A random source scene: min..max shapes in distinct cells, each (colour, kind) unique, so
    "the red circle" always names one shape."""
    n = int(rng.integers(cfg.min_shapes, cfg.max_shapes + 1))
    cells = rng.choice(cfg.grid_size**2, size=n, replace=False)
    combos = [(c, k) for c in cfg.colors for k in cfg.shape_kinds]
    picks = rng.choice(len(combos), size=n, replace=False)
    shapes = tuple(
        Shape(
            id=i,
            kind=combos[int(p)][1],
            color=combos[int(p)][0],
            row=float(int(cell) // cfg.grid_size),
            col=float(int(cell) % cfg.grid_size),
        )
        for i, (cell, p) in enumerate(zip(cells, picks))
    )
    background = str(cfg.backgrounds[int(rng.integers(len(cfg.backgrounds)))])
    return Scene(background=background, shapes=shapes, grid_size=cfg.grid_size)
