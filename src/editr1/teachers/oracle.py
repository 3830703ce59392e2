"""The oracle teacher: the synthetic world's truth, seen through documented imperfections.

    truth = WorldTruth.from_lake(Path("storage"))
    teacher = OracleTeacher(truth, TeacherConfig(), WorldConfig())
    checklists = teacher.principles(contexts)           # 10 principles per context
    texts = teacher.traces(quads, k=4, temperature=1.0)  # K RRM outputs per quadruple
    gold = teacher.verify(quad)                          # always the truth

The oracle looks every image up in the world's scene graphs (`editr1.world.truth`), so it only
knows images `write_batch` wrote; an editor's rollout raises KeyError. Its checklist maps each
principle to a fact check (`oracle_text.checklist`); `verify` evaluates them on the true facts.

A trace first describes the source and the edited image, then gives one verdict line per
principle, then the JSON answers and the score (DESIGN §4; FINDINGS.md: the descriptions are
what lets a tiny RRM learn). It is written from the teacher's *perception*, which differs from
the truth in the ways of a real VLM teacher (DESIGN §8), each a `TeacherConfig` field:

- random errors: each verdict flips with probability random_error_rate x max(T, 0.25),
  independently per trace, so verification + selection of the best of K traces catch them;
- blind spots, the same in every trace, so selection cannot catch them: an unrequested
  background change goes unseen (`blind_to_background_changes`), and `confused_colors` are
  always named wrongly ("orange" is seen as red) — in the descriptions and in the verdicts;
- its own rubric: the score is 10 x the `rubric_weights`-weighted mean of its verdicts per
  category (follow 0.7, keep 0.1, quality 0.2), rounded half up to an integer, where annotators
  weigh keep far more (0.45 / 0.4 / 0.15, graded penalties): one unrequested change costs the
  teacher 0.3 point (it rounds away) and annotators 3; a half-done recolour, move, removal or
  background fails two of four follow verdicts (-3.5), a wrong value only one (-1.75).

`perfect: true` turns all of this off: verdicts are the gold labels and the score is the
annotators' `human_quality` of the facts the verdicts imply (1 decimal) — equal to the true
quality for every candidate the world's editors make.

Measured on 300 world contexts (write_batch seed 0, 900 pairs, 1,134 edits; K = 4 traces at
T = 1; "selected" = the trace cold start keeps: best agreement with gold, DESIGN §5). Mean score
per candidate kind:

| kind         | annotators | perfect teacher | default, all traces | default, selected |
|--------------|------------|-----------------|---------------------|-------------------|
| correct      | 10.00      | 10.00           | 9.24                | 9.70              |
| white_border | 9.25       | 9.30            | 8.50                | 8.76              |
| artifact     | 9.10       | 9.10            | 8.50                | 8.79              |
| partial      | 7.75       | 7.80            | 6.97                | 7.27              |
| extra_change | 7.00       | 7.00            | 9.15                | 9.66              |
| wrong_color  | 6.40       | 6.40            | 7.73                | 7.88              |
| wrong_object | 2.50       | 2.50            | 5.57                | 5.56              |
| no_change    | 0.00       | 0.00            | 4.73                | 4.81              |

Pair kinds (better>worse for annotators) that the default teacher's selected traces order
wrongly — the worse edit strictly higher: partial>extra_change 95% of pairs,
partial>wrong_color 73% (24% ties), artifact>extra_change 91%, white_border>extra_change 82%;
correct>extra_change is a tie on 97% (the score-only bias FINDINGS warns about). Orderings it
shares with annotators: correct>partial, correct>wrong_object, wrong_color>wrong_object,
extra_change>wrong_color (all >80% right). The perfect teacher orders no pair wrongly.
(tests/unit/test_oracle.py asserts the first two inversions and their absence when perfect.)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np

from editr1.rrm.items import Context, Quadruple
from editr1.rrm.parser import render_output
from editr1.rrm.principles import Principle, validate_principles
from editr1.teachers.base import TeacherUsage
from editr1.teachers.oracle_text import ROLES, Check, View, checklist, descriptions, write_reasoning
from editr1.teachers.params import TeacherConfig
from editr1.world.annotators import human_quality
from editr1.world.facts import EditFacts, edit_facts
from editr1.world.params import WorldConfig
from editr1.world.scene import Scene
from editr1.world.truth import WorldTruth


@dataclass(frozen=True)
class Flaws:
    """The oracle's imperfections in effect (all off when `cfg.perfect`)."""

    error_rate: float
    error_floor: float
    blind_to_background_changes: bool
    confusion: Mapping[str, str]
    rubric: str
    rubric_weights: Mapping[str, float]
    score_decimals: int

    @classmethod
    def from_config(cls, cfg: TeacherConfig) -> Flaws:
        if cfg.perfect:
            return cls(0.0, 0.0, False, MappingProxyType({}), "annotators", cfg.rubric_weights, 1)
        return cls(
            cfg.random_error_rate, cfg.error_temperature_floor, cfg.blind_to_background_changes,
            MappingProxyType(dict(cfg.confused_colors)), cfg.rubric, cfg.rubric_weights, cfg.score_decimals,
        )

    def error_probability(self, temperature: float) -> float:
        return min(1.0, self.error_rate * max(temperature, self.error_floor))


def perceive_scene(scene: Scene, confusion: Mapping[str, str]) -> Scene:
    """The scene with every confused colour (shapes, blends, background) named as the teacher
    names it."""
    if not confusion:
        return scene

    def seen(color: str | None) -> str | None:
        return None if color is None else confusion.get(color, color)

    shapes = tuple(replace(s, color=seen(s.color), blend_to=seen(s.blend_to)) for s in scene.shapes)
    return replace(scene, shapes=shapes, background=seen(scene.background),
                   background_blend_to=seen(scene.background_blend_to))


def perceive(truth: View, flaws: Flaws) -> View:
    """What the teacher sees of an edit: colours confused, an unrequested background change
    missed; the facts are recomputed from what it sees (the request it reads correctly)."""
    source = perceive_scene(truth.source, flaws.confusion)
    edited = perceive_scene(truth.edited, flaws.confusion)
    if flaws.blind_to_background_changes and truth.spec.category != "background_change":
        edited = replace(edited, background=source.background, background_blend_to=source.background_blend_to,
                         background_blend=source.background_blend)
    if (source, edited) == (truth.source, truth.edited):
        return truth
    return View(source, edited, truth.spec, truth.effects, edit_facts(source, truth.spec, edited, truth.effects))


def implied_facts(checks: Sequence[Check], verdicts: Sequence[int], category: str) -> EditFacts:
    """The facts a pattern of verdicts states: the requested value is right when every
    `attribute` verdict says yes, the edit is partial when the target was edited but a
    `complete` verdict says no, each failed keep verdict is one unrequested change, ..."""
    says: dict[str, list[bool]] = {role: [] for role in ROLES}
    for check, v in zip(checks, verdicts, strict=True):
        says[check.role].append(bool(v))
    # A role without a question (a checklist cut short) states nothing wrong.
    attribute, target, complete = all(says["attribute"]), all(says["target"]), all(says["complete"])
    unrequested = sum(not v for v in says["keep"])
    changed = all(says["changed"]) if says["changed"] else target or unrequested > 0
    return EditFacts(
        category=category,
        requested_done=attribute and complete,
        target_right=target,
        attribute_right=attribute,
        partial=target and not complete,
        changed=changed,
        unrequested_changes=unrequested,
        artifact=not (all(says["noise"]) and all(says["blur"])),
        border=not all(says["border"]),
        requested="",
        observed="",
        unrequested=(),
    )


def rubric_score(checks: Sequence[Check], verdicts: Sequence[int], category: str, flaws: Flaws,
                 world: WorldConfig) -> float:
    """The teacher's final score of its own verdicts (module docstring), rounded."""
    if flaws.rubric == "annotators":
        value = human_quality(implied_facts(checks, verdicts, category), world)
    elif flaws.rubric == "graded":
        own = replace(world, quality_weights=dict(flaws.rubric_weights))
        value = human_quality(implied_facts(checks, verdicts, category), own)
    else:
        means, weights = [], []
        for group, weight in flaws.rubric_weights.items():
            answers = [v for check, v in zip(checks, verdicts) if check.principle.category == group]
            if answers:  # a category without questions leaves the others' weights to share
                means.append(sum(answers) / len(answers))
                weights.append(weight)
        total = sum(weights)
        value = 10.0 * sum(w * m for w, m in zip(weights, means)) / total if total else 0.0
    # Half up, not to even: 9.5 is a 10 for this teacher.
    scale = 10**flaws.score_decimals
    return math.floor(value * scale + 0.5 + 1e-9) / scale


def trace_seed(seed: int, source_sha: str, instruction: str, edited_sha: str, index: int) -> int:
    """The random stream of one trace: the same inputs and seed give the same text."""
    key = f"{seed}|{source_sha}|{' '.join(instruction.split()).casefold()}|{edited_sha}|{index}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


class OracleTeacher:
    """A `Teacher` that knows the world's truth (module docstring)."""

    name = "oracle"

    def __init__(self, truth: WorldTruth, cfg: TeacherConfig, world: WorldConfig):
        self.truth = truth
        self.cfg = cfg
        self.world = world
        self.flaws = Flaws.from_config(cfg)
        self.usage = TeacherUsage()

    def checks(self, context: Context) -> list[Check]:
        """The checklist of one context, with the fact check behind each principle."""
        source = self.truth.source(context.source_sha, context.instruction)
        return checklist(source.scene, source.spec)

    def principles(self, contexts: Sequence[Context]) -> list[list[Principle]]:
        """Ten principles per context (4 follow, 3 keep, 3 quality), specific to its category."""
        out = []
        for context in contexts:
            self.usage.calls += 1
            out.append(validate_principles([c.principle for c in self.checks(context)]))
        return out

    def _case(self, quad: Quadruple) -> tuple[list[Check], View]:
        """The quadruple's checks, in its principles' order, and the true view of its edit."""
        context = quad.context
        edit = self.truth.edit(quad.edited_sha, context.source_sha, context.instruction)
        source = self.truth.source(context.source_sha, context.instruction)
        by_question = {c.principle.question: c for c in checklist(source.scene, source.spec)}
        checks = []
        for p in quad.principles:
            if p.question not in by_question:
                raise ValueError(f"the oracle can only judge its own principles; {p.question!r} is not "
                                 f"one of them for this context")
            checks.append(by_question[p.question])
        return checks, View(source.scene, edit.scene, edit.spec, edit.effects, edit.facts)

    def verify(self, quad: Quadruple) -> list[int]:
        """Gold 0/1 per principle, from the true facts of the edited image."""
        self.usage.calls += 1
        checks, truth = self._case(quad)
        return [int(c.verdict(truth)) for c in checks]

    def traces(self, quads: Sequence[Quadruple], k: int, temperature: float) -> list[list[str]]:
        """K RRM outputs per quadruple; trace i uses phrasing i mod 3 and its own random errors."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        return [self._traces(quad, k, temperature) for quad in quads]

    def _traces(self, quad: Quadruple, k: int, temperature: float) -> list[str]:
        self.usage.calls += k
        checks, truth = self._case(quad)
        seen = perceive(truth, self.flaws)
        gold = [c.verdict(truth) for c in checks]
        believed = [c.verdict(seen) for c in checks]
        labels = [(c.label, c.value(seen)) for c in checks]
        questions = [c.principle.question for c in checks]
        target = seen.spec.target if self.cfg.mark_target else None
        templates, source, edited = descriptions(self.cfg.reasoning_style, seen.source, seen.edited, seen.effects,
                                                 target)
        p_error = self.flaws.error_probability(temperature)
        out = []
        for index in range(k):
            rng = np.random.default_rng(trace_seed(self.cfg.seed, quad.context.source_sha, quad.instruction,
                                                   quad.edited_sha, index))
            # One draw per principle whatever the temperature: a lower temperature errs on a subset.
            slips = rng.random(len(checks)) < p_error
            # A verdict a blind spot decides is never flipped: there the teacher is confidently wrong.
            verdicts = [int(b != slip) if b == g else int(b) for b, g, slip in zip(believed, gold, slips)]
            lines = [(label, value, bool(v)) for (label, value), v in zip(labels, verdicts)]
            reasoning = write_reasoning(templates[index % len(templates)], source, edited, lines)
            score = rubric_score(checks, verdicts, truth.spec.category, self.flaws, self.world)
            out.append(render_output(reasoning, questions, verdicts, score))
        return out
