"""What people think of an edit: the true quality and simulated, noisy annotators.

`human_quality(facts, cfg)` is the world's ground truth of how good an edit is, on 0-10:

    quality = 10 * (w_follow * follow + attempted * (w_keep * keep + w_quality * look))

with principle scores in [0, 1] (weights `cfg.quality_weights`, penalties `cfg.quality_penalties`):

- follow = 1 if the request is done in full; else 1 - partial (0.5) if done part-way; else
  1 - wrong_attribute (0.2 left) if the right thing was edited with a wrong value; else
  1 - wrong_target (0: nothing or the wrong thing was edited).
- keep = max(0, 1 - unrequested_change * number of unrequested changes) (0.75 per change).
- look = max(0, 1 - artifact * [noise/blur] - border * [white frame]) (0.6, 0.5).
- attempted = 1 if the scene changed at all, else 0: leaving everything alone is no virtue in
  an edit that does nothing, so a no-op earns neither keep nor look credit.

With the default weights (follow 0.45, keep 0.4, quality 0.15) one unrequested change costs
10 * 0.4 * 0.75 = 3.0 points and a half-done edit 10 * 0.45 * 0.5 = 2.25: annotators dislike
unrequested changes MORE than partial compliance. Per candidate kind: correct 10, white_border
9.25, artifact 9.1, partial 7.75, extra_change 7.0, wrong_color 6.4, wrong_object 2.5,
no_change 0.

`annotate(q_a, q_b, rng, cfg)` is one annotator's judgement of a pair: perceived quality = true
quality + Gaussian noise (`annotator_noise`); a tie when the perceived gap is under
`tie_margin`; otherwise "a" with Bradley-Terry probability sigmoid(gap / annotator_temperature).
"""

from __future__ import annotations

import math

import numpy as np

from editr1.world.facts import EditFacts
from editr1.world.params import WorldConfig


def principle_scores(facts: EditFacts, cfg: WorldConfig) -> dict[str, float]:
    """Follow / keep / quality scores in [0, 1] as annotators see them (see module docstring)."""
    pen = cfg.quality_penalties
    if facts.requested_done:
        follow = 1.0
    elif facts.partial:
        follow = 1.0 - pen["partial"]
    elif facts.target_right:
        follow = 1.0 - pen["wrong_attribute"]
    else:
        follow = 1.0 - pen["wrong_target"]
    keep = max(0.0, 1.0 - pen["unrequested_change"] * facts.unrequested_changes)
    look = max(0.0, 1.0 - pen["artifact"] * facts.artifact - pen["border"] * facts.border)
    return {"follow": follow, "keep": keep, "quality": look}


def human_quality(facts: EditFacts, cfg: WorldConfig) -> float:
    """True quality of an edit on 0-10 (module docstring: formula and per-kind values)."""
    s, w = principle_scores(facts, cfg), cfg.quality_weights
    attempted = 1.0 if facts.changed else 0.0
    value = 10.0 * (w["follow"] * s["follow"] + attempted * (w["keep"] * s["keep"] + w["quality"] * s["quality"]))
    # Rounded so that the value written to JSON is the same on every platform.
    return round(min(10.0, max(0.0, value)), 6)


def annotator_ids(cfg: WorldConfig) -> list[str]:
    """The pool of annotator ids: ann_00, ann_01, ..."""
    width = max(2, len(str(cfg.annotator_pool - 1)))
    return [f"ann_{i:0{width}d}" for i in range(cfg.annotator_pool)]


def annotate(q_a: float, q_b: float, rng: np.random.Generator, cfg: WorldConfig) -> str:
    """One annotator's verdict on edits of true quality q_a and q_b: "a", "b" or "tie"."""
    # Always draw the same three numbers, so one judgement never shifts the stream of the next.
    noise = rng.normal(0.0, 1.0, size=2) * cfg.annotator_noise
    coin = rng.random()
    gap = (q_a + noise[0]) - (q_b + noise[1])
    if abs(gap) < cfg.tie_margin or gap == 0:
        return "tie"
    if cfg.annotator_temperature == 0:
        return "a" if gap > 0 else "b"
    p_a = 1.0 / (1.0 + math.exp(-gap / cfg.annotator_temperature))
    return "a" if coin < p_a else "b"


def annotate_pair(q_a: float, q_b: float, rng: np.random.Generator, cfg: WorldConfig) -> list[tuple[str, str]]:
    """`annotators_per_pair` distinct annotators from the pool judge one pair:
    [(annotator id, "a" | "b" | "tie"), ...] in the order they were drawn."""
    pool = annotator_ids(cfg)
    chosen = rng.choice(len(pool), size=cfg.annotators_per_pair, replace=False)
    return [(pool[int(i)], annotate(q_a, q_b, rng, cfg)) for i in chosen]
