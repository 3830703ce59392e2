"""Teacher parameters: the `teacher:` section of params.yaml.

`kind` picks the teacher (`editr1.teachers.factory`). The oracle's fields are world parameters:
they make the synthetic teacher imperfect the way a real VLM teacher is (DESIGN §8), so that
human preference pairs hold information its cold-start traces lack (FINDINGS.md, GCPO sections).
`perfect: true` turns every one of them off. The openai / hf fields configure the real teachers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from editr1.world.params import BACKGROUND_COLORS, QUALITY_PRINCIPLES, SHAPE_COLORS

TEACHER_KINDS = ("oracle", "openai", "hf")
RUBRICS = ("weighted", "graded", "annotators")
REASONING_STYLES = ("scenes", "side_by_side")


@dataclass(frozen=True)
class TeacherConfig:
    """Which teacher writes principles, cold-start traces and gold labels (params.yaml ``teacher``)."""

    kind: str = field(
        default="oracle",
        metadata={"help": f"Teacher: one of {', '.join(TEACHER_KINDS)} (oracle = the synthetic world's "
                  "truth seen through the imperfections below; needs world scene graphs in the lake)."},
    )
    # --- the oracle's imperfections (all off when perfect) ---
    perfect: bool = field(
        default=False,
        metadata={"help": "Oracle only: turn every imperfection below off (no random errors, no blind "
                  "spots, the annotators' rubric at 1 decimal): traces then hold the whole truth."},
    )
    random_error_rate: float = field(
        default=0.05,
        metadata={"help": "Oracle: chance that one verdict is flipped, times max(temperature, "
                  "error_temperature_floor); independent per trace, so verification + selection catch "
                  "these. Verdicts a blind spot decides are never flipped."},
    )
    error_temperature_floor: float = field(
        default=0.25,
        metadata={"help": "Oracle: the lowest temperature factor of random_error_rate (greedy traces still "
                  "err a little)."},
    )
    blind_to_background_changes: bool = field(
        default=True,
        metadata={"help": "Oracle: an unrequested background change goes unseen: the edited image is "
                  "described with the source's background and 'background unchanged' is answered yes, "
                  "in every trace (selection cannot catch it)."},
    )
    confused_colors: tuple[tuple[str, str], ...] = field(
        default=(("orange", "red"), ("purple", "blue")),
        metadata={"help": "Oracle: [seen, said] colour pairs: the teacher always names `seen` as `said` when "
                  "describing and judging (shapes and backgrounds), in every trace."},
    )
    rubric: str = field(
        default="weighted",
        metadata={"help": f"Oracle's final score, one of {', '.join(RUBRICS)}: weighted = 10 x the "
                  "rubric_weights-weighted mean of its verdicts per principle category; graded = the "
                  "annotators' graded penalties of the facts its verdicts imply, weighed by rubric_weights "
                  "instead of the annotators' quality_weights; annotators = the world's human_quality of "
                  "those facts."},
    )
    rubric_weights: Mapping[str, float] = field(
        default_factory=lambda: {"follow": 0.7, "keep": 0.1, "quality": 0.2},
        metadata={"help": "Oracle's weighted and graded rubrics: weight of each principle category (sum 1). The default "
                  "puts follow far above keep, unlike the annotators (0.45 / 0.4 / 0.15): one unrequested "
                  "change costs it 0.3 point (annotators: 3), so it scores an extra_change edit like a "
                  "correct one and above a partial or wrong-colour one, while one artefact still costs 0.7."},
    )
    reasoning_style: str = field(
        default="side_by_side",
        metadata={"help": "Oracle: how a trace describes the images before its check lines: side_by_side = each "
                  "shape's source state next to its edited state (\"red circle top left → green circle top "
                  "left\"); scenes = the source, then the edited image (\"source: red circle top left. edited: "
                  "green circle top left.\"). The tiny RRM orders test pairs better after side_by_side SFT "
                  "(README, \"Training the RRM\")."},
    )
    mark_target: bool = field(
        default=False,
        metadata={"help": "Oracle: open the instruction's target shape's entry in the description with \"target\" "
                  "(\"target red circle top left → same\"), so a check line about the target reads that entry; "
                  "without it a tiny RRM often writes the requested value or the changed shape's instead "
                  "(README, \"Training the RRM\": the wrong-object diagnosis). Edits without a target shape "
                  "(addition, background) are unchanged."},
    )
    score_decimals: int = field(
        default=0,
        metadata={"help": "Oracle: decimals of the final score (0 or 1; perfect writes 1)."},
    )
    # --- openai-compatible endpoint ---
    openai_base_url: str = field(
        default="", metadata={"help": "OpenAI-compatible endpoint (vLLM, SGLang, a hosted API), e.g. "
                              "http://localhost:8000/v1."})
    openai_model: str = field(default="", metadata={"help": "Model name sent to the endpoint."})
    openai_api_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "Environment variable that holds the API key."})
    max_concurrency: int = field(default=8, metadata={"help": "Concurrent requests to the endpoint."})
    timeout_s: float = field(default=60.0, metadata={"help": "Per-request timeout in seconds."})
    max_retries: int = field(
        default=4, metadata={"help": "Retries of a failed request or of an answer that fails validation."})
    price_prompt_per_1k: float = field(default=0.0, metadata={"help": "USD per 1,000 prompt tokens."})
    price_completion_per_1k: float = field(default=0.0, metadata={"help": "USD per 1,000 completion tokens."})
    cache_dir: str = field(
        default="", metadata={"help": "Teacher response cache (keyed by prompt hash); empty = "
                              "<storage>/teacher_cache."})
    # --- local transformers VLM ---
    hf_model: str = field(default="", metadata={"help": "Hub id or local path of the hf teacher VLM."})
    seed: int = field(
        default=0, metadata={"help": "Seed of the teacher's sampling (oracle: of its random errors)."})

    def __post_init__(self) -> None:
        colors = set(SHAPE_COLORS) | set(BACKGROUND_COLORS)
        checks = [
            (self.kind in TEACHER_KINDS, f"kind must be one of {TEACHER_KINDS}, got {self.kind!r}"),
            (0.0 <= self.random_error_rate <= 1.0, "random_error_rate must be in [0, 1]"),
            (self.error_temperature_floor >= 0.0, "error_temperature_floor must be >= 0"),
            (all(len(p) == 2 and set(p) <= colors and p[0] != p[1] for p in self.confused_colors),
             f"confused_colors: [seen, said] pairs of two different colours of {sorted(colors)}"),
            (len({p[0] for p in self.confused_colors}) == len(self.confused_colors),
             "confused_colors: each seen colour at most once"),
            (self.rubric in RUBRICS, f"rubric must be one of {RUBRICS}, got {self.rubric!r}"),
            (set(self.rubric_weights) == set(QUALITY_PRINCIPLES)
             and all(w >= 0 for w in self.rubric_weights.values())
             and abs(sum(self.rubric_weights.values()) - 1.0) < 1e-6,
             f"rubric_weights: exactly {QUALITY_PRINCIPLES}, >= 0, summing to 1"),
            (self.reasoning_style in REASONING_STYLES,
             f"reasoning_style must be one of {REASONING_STYLES}, got {self.reasoning_style!r}"),
            (self.score_decimals in (0, 1), "score_decimals must be 0 or 1"),
            (self.max_concurrency >= 1, "max_concurrency must be >= 1"),
            (self.timeout_s > 0, "timeout_s must be > 0"),
            (self.max_retries >= 0, "max_retries must be >= 0"),
            (min(self.price_prompt_per_1k, self.price_completion_per_1k) >= 0, "prices must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"TeacherConfig: {message}")
