"""The synthetic shapes editing world: the embedded default data, with known truth.

Scenes of coloured shapes on a named grid (`scene`), edit requests and their instructions in six
GEdit categories (`instructions`), candidate edits with known failure modes (`editors`), the
facts of each edit computed from scene graphs (`facts`), the annotators' true quality and noisy
judgements (`annotators`), and writers for preference batches and editing data (`batch`).
All parameters are in `WorldConfig` (params.yaml section ``world``).
"""

from editr1.world.annotators import annotate, annotate_pair, annotator_ids, human_quality, principle_scores
from editr1.world.batch import (
    EditingExample,
    make_editing_examples,
    png_bytes,
    write_batch,
    write_editing_dataset,
)
from editr1.world.editors import (
    EDITORS,
    Candidate,
    applicable_kinds,
    apply,
    correct_edit,
    sample_candidates,
    unrequested_change,
)
from editr1.world.facts import EditFacts, edit_facts
from editr1.world.instructions import (
    EditSpec,
    instruction_and_reference,
    instruction_text,
    reference,
    sample_context,
    sample_spec,
    shapes_matching,
)
from editr1.world.params import (
    BACKGROUND_COLORS,
    CANDIDATE_KINDS,
    CATEGORIES,
    SHAPE_COLORS,
    SHAPE_KINDS,
    WorldConfig,
)
from editr1.world.scene import (
    NO_EFFECTS,
    POSITION_NAMES,
    ImageEffects,
    Scene,
    Shape,
    apply_effects,
    color_rgb,
    describe_scene,
    describe_shape,
    position_name,
    render,
    render_edit,
    sample_scene,
)

__all__ = [
    "BACKGROUND_COLORS",
    "CANDIDATE_KINDS",
    "CATEGORIES",
    "EDITORS",
    "NO_EFFECTS",
    "POSITION_NAMES",
    "SHAPE_COLORS",
    "SHAPE_KINDS",
    "Candidate",
    "EditFacts",
    "EditSpec",
    "EditingExample",
    "ImageEffects",
    "Scene",
    "Shape",
    "WorldConfig",
    "annotate",
    "annotate_pair",
    "annotator_ids",
    "applicable_kinds",
    "apply",
    "apply_effects",
    "color_rgb",
    "correct_edit",
    "describe_scene",
    "describe_shape",
    "edit_facts",
    "human_quality",
    "instruction_and_reference",
    "instruction_text",
    "make_editing_examples",
    "png_bytes",
    "position_name",
    "principle_scores",
    "reference",
    "render",
    "render_edit",
    "sample_candidates",
    "sample_context",
    "sample_scene",
    "sample_spec",
    "shapes_matching",
    "unrequested_change",
    "write_batch",
    "write_editing_dataset",
]
