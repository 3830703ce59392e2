"""World parameters: the `world:` section of params.yaml.

Every knob of the synthetic shapes world lives here — what scenes look like, which edits are
asked for, which candidate edits are shown, how simulated annotators judge them, and how
flawed the editor's supervised data is. Set ``overedit_rate: 0``, ``annotator_noise: 0``,
``annotator_temperature: 0`` and ``tie_margin: 0`` for a "perfect" world.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

SHAPE_KINDS = ("circle", "square", "triangle", "star", "diamond", "hexagon")
# Shape colours are far apart in RGB so a 56x56 image keeps them distinguishable.
SHAPE_COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 90, 230),
    "yellow": (245, 215, 40),
    "purple": (145, 55, 200),
    "orange": (245, 135, 20),
    "cyan": (40, 210, 225),
    "pink": (245, 120, 190),
}
# Backgrounds have their own palette: no shape colour, and no "white", so that the white-border
# failure is always visible and never confused with a background.
BACKGROUND_COLORS = {
    "gray": (128, 128, 128),
    "black": (25, 25, 25),
    "beige": (225, 210, 170),
    "brown": (115, 75, 45),
    "navy": (20, 30, 80),
}
CATEGORIES = (
    "color_alteration",
    "subject_addition",
    "subject_removal",
    "subject_replacement",
    "background_change",
    "motion_change",
)
CANDIDATE_KINDS = (
    "correct",
    "wrong_color",
    "wrong_object",
    "extra_change",
    "no_change",
    "partial",
    "artifact",
    "white_border",
)
QUALITY_PRINCIPLES = ("follow", "keep", "quality")
QUALITY_PENALTIES = (
    "partial",
    "wrong_attribute",
    "wrong_target",
    "unrequested_change",
    "artifact",
    "border",
)


@dataclass(frozen=True)
class WorldConfig:
    """Parameters of the synthetic shapes editing world (params.yaml section ``world``)."""

    image_size: int = field(
        default=56, metadata={"help": "Side in pixels of every rendered image. params.yaml: 84, so the tiny RRM's "
                                      "14-px patches merged 2x2 make one image token per cell of the 3x3 grid."}
    )
    grid_size: int = field(
        default=3, metadata={"help": "Shapes sit on a grid_size x grid_size grid of named cells (2 or 3)."}
    )
    min_shapes: int = field(default=1, metadata={"help": "Fewest shapes in a source scene."})
    max_shapes: int = field(default=3, metadata={"help": "Most shapes in a source scene (at most 4)."})
    shape_kinds: tuple[str, ...] = field(
        default=("circle", "square", "triangle", "star", "diamond"),
        metadata={"help": f"Shape kinds drawn in scenes; any of {', '.join(SHAPE_KINDS)} "
                  "(hexagon is left out by default: at 56 px it looks like a circle)."},
    )
    colors: tuple[str, ...] = field(
        default=("red", "green", "blue", "yellow", "purple", "orange"),
        metadata={"help": f"Shape colours; any of {', '.join(SHAPE_COLORS)}."},
    )
    backgrounds: tuple[str, ...] = field(
        default=("gray", "black", "beige", "brown"),
        metadata={"help": f"Background colours; any of {', '.join(BACKGROUND_COLORS)} (never white; navy is "
                  "left out by default: at 56 px it is close to black)."},
    )
    category_weights: Mapping[str, float] = field(
        default_factory=lambda: {c: 1.0 for c in CATEGORIES},
        metadata={"help": "GEdit edit categories and their sampling weights (0 disables one)."},
    )
    candidate_weights: Mapping[str, float] = field(
        default_factory=lambda: {
            "correct": 3.0,
            "wrong_color": 2.0,
            "wrong_object": 1.5,
            "extra_change": 2.5,
            "no_change": 1.0,
            "partial": 1.5,
            "artifact": 1.0,
            "white_border": 1.0,
        },
        metadata={"help": "Sampling weights of the candidate edit kinds shown to annotators "
                  "(drawn without replacement per context among the kinds that apply)."},
    )
    candidates_per_context: int = field(
        default=4, metadata={"help": "Candidate edits drawn per (source image, instruction)."}
    )
    pairs_per_context: int = field(
        default=3, metadata={"help": "Candidate pairs judged per context (at most C(candidates, 2))."}
    )
    extra_change_background_prob: float = field(
        default=0.5,
        metadata={"help": "Chance that an unrequested change (extra_change, over-edited targets) hits "
                  "the background rather than another shape, where both are possible."},
    )
    annotators_per_pair: int = field(default=3, metadata={"help": "Annotators who judge each pair."})
    annotator_pool: int = field(default=12, metadata={"help": "Number of distinct annotators (ids ann_00…)."})
    annotator_temperature: float = field(
        default=0.6,
        metadata={"help": "Bradley-Terry temperature: P(a) = sigmoid((perceived_a - perceived_b) / T); "
                  "0 makes the better-perceived edit always win."},
    )
    annotator_noise: float = field(
        default=0.6,
        metadata={"help": "Std of each annotator's Gaussian perception noise on quality (0-10 scale)."},
    )
    tie_margin: float = field(
        default=0.5, metadata={"help": "An annotator says tie when |perceived_a - perceived_b| < tie_margin."}
    )
    quality_weights: Mapping[str, float] = field(
        default_factory=lambda: {"follow": 0.45, "keep": 0.4, "quality": 0.15},
        metadata={"help": "Weights of the principles in the annotators' true quality "
                  "(10 x weighted sum of principle scores in [0, 1]); they must sum to 1."},
    )
    quality_penalties: Mapping[str, float] = field(
        default_factory=lambda: {
            "partial": 0.5,
            "wrong_attribute": 0.8,
            "wrong_target": 1.0,
            "unrequested_change": 0.75,
            "artifact": 0.6,
            "border": 0.5,
        },
        metadata={"help": "What each failure takes off its principle score: partial / wrong_attribute / "
                  "wrong_target off follow, unrequested_change (per change) off keep, artifact / border off "
                  "quality. With the default weights an unrequested change costs 3.0 points and partial "
                  "compliance 2.25: annotators dislike unrequested changes MORE than half-done edits."},
    )
    overedit_rate: float = field(
        default=0.4,
        metadata={"help": "Share of the editor's supervised targets that also make an unrequested change "
                  "(background shift or another shape changed), as real editing data does."},
    )

    def __post_init__(self) -> None:
        checks = [
            (self.image_size >= 16, "image_size must be >= 16"),
            (self.grid_size in (2, 3), "grid_size must be 2 or 3"),
            (1 <= self.min_shapes <= self.max_shapes <= 4, "need 1 <= min_shapes <= max_shapes <= 4"),
            (self.max_shapes < self.grid_size**2, "max_shapes must leave a free grid cell"),
            (set(self.shape_kinds) <= set(SHAPE_KINDS) and len(self.shape_kinds) >= 3,
             f"shape_kinds: at least 3 of {SHAPE_KINDS}"),
            (set(self.colors) <= set(SHAPE_COLORS) and len(self.colors) >= 3,
             f"colors: at least 3 of {tuple(SHAPE_COLORS)}"),
            (set(self.backgrounds) <= set(BACKGROUND_COLORS) and len(self.backgrounds) >= 2,
             f"backgrounds: at least 2 of {tuple(BACKGROUND_COLORS)}"),
            (_valid_weights(self.category_weights, CATEGORIES), f"category_weights: keys in {CATEGORIES}, >= 0"),
            (_valid_weights(self.candidate_weights, CANDIDATE_KINDS),
             f"candidate_weights: keys in {CANDIDATE_KINDS}, >= 0"),
            (self.candidates_per_context >= 2, "candidates_per_context must be >= 2"),
            (1 <= self.pairs_per_context, "pairs_per_context must be >= 1"),
            (self.annotators_per_pair >= 1, "annotators_per_pair must be >= 1"),
            (self.annotator_pool >= self.annotators_per_pair, "annotator_pool must be >= annotators_per_pair"),
            (min(self.annotator_temperature, self.annotator_noise, self.tie_margin) >= 0,
             "annotator_temperature, annotator_noise and tie_margin must be >= 0"),
            (set(self.quality_weights) == set(QUALITY_PRINCIPLES)
             and abs(sum(self.quality_weights.values()) - 1.0) < 1e-6,
             f"quality_weights: exactly {QUALITY_PRINCIPLES}, summing to 1"),
            (set(self.quality_penalties) == set(QUALITY_PENALTIES)
             and all(0 <= v <= 1 for v in self.quality_penalties.values()),
             f"quality_penalties: exactly {QUALITY_PENALTIES}, each in [0, 1]"),
            (0.0 <= self.overedit_rate <= 1.0, "overedit_rate must be in [0, 1]"),
            (0.0 <= self.extra_change_background_prob <= 1.0, "extra_change_background_prob must be in [0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"WorldConfig: {message}")


def _valid_weights(weights: Mapping[str, float], allowed: tuple[str, ...]) -> bool:
    return (
        set(weights) <= set(allowed)
        and all(w >= 0 for w in weights.values())
        and sum(weights.values()) > 0
    )
