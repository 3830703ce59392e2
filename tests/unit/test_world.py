"""Unit tests of the synthetic shapes world (editr1.world)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from editr1.world import (
    CANDIDATE_KINDS,
    CATEGORIES,
    EDITORS,
    NO_EFFECTS,
    EditFacts,
    EditSpec,
    ImageEffects,
    Scene,
    Shape,
    WorldConfig,
    annotate,
    annotate_pair,
    applicable_kinds,
    apply,
    apply_effects,
    color_rgb,
    edit_facts,
    human_quality,
    instruction_and_reference,
    make_editing_examples,
    position_name,
    render,
    sample_context,
    sample_scene,
    shapes_matching,
    write_batch,
    write_editing_dataset,
)

CFG = WorldConfig()
PAIR_KEYS = {"source_image", "instruction", "edit_a", "edit_b", "preference", "annotator", "category", "batch_id"}


def only(category: str, **changes) -> WorldConfig:
    weights = {c: float(c == category) for c in CATEGORIES}
    return dataclasses.replace(CFG, category_weights=weights, **changes)


def two_shape_scene() -> Scene:
    return Scene(
        background="gray",
        shapes=(
            Shape(id=0, kind="circle", color="red", row=0.0, col=0.0),
            Shape(id=1, kind="star", color="blue", row=2.0, col=2.0),
        ),
    )


# --- config -------------------------------------------------------------------------------


def test_config_fields_documented_and_yaml_safe():
    for f in dataclasses.fields(WorldConfig):
        assert f.metadata.get("help"), f.name
    # The defaults go into params.yaml as they are; YAML gives lists back for the tuples.
    loaded = yaml.safe_load(yaml.safe_dump(dataclasses.asdict(CFG)))
    again = WorldConfig(**loaded)
    assert list(again.colors) == list(CFG.colors) and again.candidate_weights == CFG.candidate_weights


@pytest.mark.parametrize(
    "bad",
    [
        {"min_shapes": 3, "max_shapes": 2},
        {"grid_size": 2, "max_shapes": 4},
        {"colors": ("red", "magenta", "blue")},
        {"backgrounds": ("white", "gray")},
        {"quality_weights": {"follow": 0.5, "keep": 0.5, "quality": 0.5}},
        {"candidate_weights": {"correct": 1.0, "perfect": 1.0}},
        {"annotators_per_pair": 20},
        {"overedit_rate": 1.5},
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        WorldConfig(**bad)


# --- scenes and rendering ------------------------------------------------------------------


@pytest.mark.parametrize("size", [56, 256, 512])
def test_render_is_deterministic_at_each_size(size):
    scene = two_shape_scene()
    a, b = render(scene, size), render(scene, size)
    assert a.mode == "RGB" and a.size == (size, size)
    assert a.tobytes() == b.tobytes()
    px = np.asarray(a)
    cell = size / 3
    # Shape centres carry the shape colour, the corner between shapes the background.
    assert tuple(px[int(cell / 2), int(cell / 2)]) == color_rgb("red")
    assert tuple(px[int(2.5 * cell), int(2.5 * cell)]) == color_rgb("blue")
    assert tuple(px[int(cell / 2), int(2.5 * cell)]) == color_rgb("gray")


def test_kinds_are_distinguishable_at_56():
    images = {}
    for kind in ("circle", "square", "triangle", "star", "diamond", "hexagon"):
        scene = Scene("gray", (Shape(0, kind, "red", 1.0, 1.0),))
        px = np.asarray(render(scene, 56)).astype(int)
        red = np.abs(px - np.array(color_rgb("red"))).sum(axis=2) < 60
        assert red.sum() > 60, kind  # big enough to see: > 60 of the 56x56 pixels
        images[kind] = red
    kinds = list(images)
    for i, a in enumerate(kinds):
        for b in kinds[i + 1:]:
            assert (images[a] != images[b]).sum() >= 15, (a, b)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_sampled_scenes_are_valid_and_round_trip(seed):
    scene = sample_scene(np.random.default_rng(seed), CFG)
    assert CFG.min_shapes <= len(scene.shapes) <= CFG.max_shapes
    assert len({s.cell for s in scene.shapes}) == len(scene.shapes)
    assert len({(s.color, s.kind) for s in scene.shapes}) == len(scene.shapes)
    assert scene.background in CFG.backgrounds
    assert Scene.from_dict(json.loads(json.dumps(scene.to_dict()))) == scene


def test_effects_are_seeded_and_visible():
    image = render(two_shape_scene(), 56)
    noisy = ImageEffects(noise_std=20.0, seed=3)
    assert apply_effects(image, noisy).tobytes() == apply_effects(image, noisy).tobytes()
    other_seed = ImageEffects(noise_std=20.0, seed=4)
    assert apply_effects(image, noisy).tobytes() != apply_effects(image, other_seed).tobytes()
    assert apply_effects(image, ImageEffects(blur=0.03)).tobytes() != image.tobytes()
    framed = np.asarray(apply_effects(image, ImageEffects(border=0.06)))
    assert (framed[:3] == 255).all() and (framed[:, -3:] == 255).all()
    assert (framed[10:-10, 10:-10] == np.asarray(image)[10:-10, 10:-10]).all()


def test_position_names():
    assert position_name(0, 0, 3) == "top left"
    assert position_name(1, 1, 3) == "center"
    assert position_name(0, 0.5, 3) == "between top left and top"
    assert position_name(1, 0, 2) == "bottom left"


# --- instructions --------------------------------------------------------------------------


@pytest.mark.parametrize("category", CATEGORIES)
def test_instructions_name_the_target_unambiguously(category):
    cfg = only(category)
    rng = np.random.default_rng(7)
    phrasings = set()
    for _ in range(60):
        scene, spec = sample_context(rng, cfg)
        assert spec.category == category
        assert EditSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
        text, ref = instruction_and_reference(spec, scene, rng)
        phrasings.add(text.split()[0])
        if spec.target is not None:
            assert ref in text
            assert shapes_matching(ref, scene) == [spec.target], (text, scene)
        if category == "subject_addition":
            assert spec.color in text and spec.kind in text and position_name(*spec.position, 3) in text
        if category == "background_change":
            assert "background" in text and spec.background in text
        if category == "color_alteration":
            assert text.rstrip(".").endswith(spec.color)
    assert len(phrasings) >= 3, phrasings


# --- editors and facts ---------------------------------------------------------------------

EXPECTED = {
    "correct": dict(
        requested_done=True, target_right=True, partial=False, changed=True, artifact=False, border=False
    ),
    "wrong_color": dict(requested_done=False, target_right=True, attribute_right=False, partial=False),
    "wrong_object": dict(requested_done=False, target_right=False, attribute_right=False, partial=False),
    "extra_change": dict(requested_done=True, target_right=True, partial=False),
    "no_change": dict(requested_done=False, target_right=False, changed=False, unrequested_changes=0),
    "partial": dict(requested_done=False, target_right=True, partial=True, unrequested_changes=0),
    "artifact": dict(requested_done=True, artifact=True, border=False, unrequested_changes=0),
    "white_border": dict(requested_done=True, artifact=False, border=True, unrequested_changes=0),
}


def test_every_kind_has_an_editor():
    assert tuple(EDITORS) == CANDIDATE_KINDS == tuple(EXPECTED)


@pytest.mark.parametrize("category", CATEGORIES)
def test_each_candidate_kind_yields_the_expected_facts(category):
    cfg = only(category, min_shapes=2)
    rng = np.random.default_rng(11)
    seen = Counter()
    for _ in range(12):
        scene, spec = sample_context(rng, cfg)
        for kind in applicable_kinds(scene, spec, cfg):
            edited, effects = apply(scene, spec, kind, rng, cfg)
            facts = edit_facts(scene, spec, edited, effects)
            for name, value in EXPECTED[kind].items():
                assert getattr(facts, name) == value, (kind, name, facts)
            if kind in ("correct", "wrong_color", "partial"):
                assert facts.unrequested_changes == 0, (kind, facts)
            if kind in ("wrong_object", "extra_change"):
                assert facts.unrequested_changes >= 1, (kind, facts)
            assert EditFacts.from_dict(json.loads(json.dumps(facts.to_dict()))) == facts
            seen[kind] += 1
    assert set(seen) == set(CANDIDATE_KINDS), seen  # with 2+ shapes every kind applies somewhere


def test_facts_come_from_scene_graphs_not_labels():
    scene = two_shape_scene()
    spec = EditSpec("color_alteration", target=0, color="green")
    by_hand = scene.with_shape(dataclasses.replace(scene.shape(0), color="green"))
    edited, effects = apply(scene, spec, "correct", np.random.default_rng(0))
    assert edit_facts(scene, spec, by_hand) == edit_facts(scene, spec, edited, effects)
    moved_too = dataclasses.replace(by_hand, background="black")
    facts = edit_facts(scene, spec, moved_too)
    assert facts.requested_done and facts.unrequested_changes == 1
    assert facts.unrequested == ("the background changed from gray to black",)
    also_moved = by_hand.with_shape(dataclasses.replace(by_hand.shape(0), row=1.0))
    facts = edit_facts(scene, spec, also_moved)
    assert facts.requested_done and facts.unrequested_changes == 1 and "moved" in facts.unrequested[0]
    assert edit_facts(scene, spec, by_hand, NO_EFFECTS).observed == "green"


# --- quality and annotators ----------------------------------------------------------------


def kind_qualities(cfg: WorldConfig = CFG) -> dict[str, float]:
    scene = two_shape_scene()
    spec = EditSpec("color_alteration", target=0, color="green")
    rng = np.random.default_rng(0)
    return {
        kind: human_quality(edit_facts(scene, spec, *apply(scene, spec, kind, rng, cfg)), cfg)
        for kind in CANDIDATE_KINDS
    }


def test_human_quality_matches_documented_values_and_order():
    q = kind_qualities()
    documented = {
        "correct": 10.0, "white_border": 9.25, "artifact": 9.1, "partial": 7.75,
        "extra_change": 7.0, "wrong_color": 6.4, "wrong_object": 2.5, "no_change": 0.0,
    }
    assert q == pytest.approx(documented)
    order = sorted(q, key=q.get, reverse=True)
    assert order == list(documented)
    # An unrequested change costs annotators more than a half-done edit.
    assert q["extra_change"] < q["partial"]
    assert all(0.0 <= v <= 10.0 for v in q.values())


def test_two_unrequested_changes_cost_more_than_one():
    scene = two_shape_scene()
    spec = EditSpec("subject_removal", target=0)
    correct = scene.without(0)
    one = dataclasses.replace(correct, background="black")
    two = one.with_shape(dataclasses.replace(correct.shape(1), color="yellow"))
    q1, q2 = (human_quality(edit_facts(scene, spec, s), CFG) for s in (one, two))
    assert q2 < q1 < human_quality(edit_facts(scene, spec, correct), CFG)


def test_annotators_tie_and_disagree_by_default():
    rng = np.random.default_rng(0)
    verdicts = [annotate_pair(10.0, 9.1, rng, CFG) for _ in range(300)]
    flat = [p for pair in verdicts for _, p in pair]
    assert {"a", "b", "tie"} <= set(flat)
    assert any(len({p for _, p in pair}) > 1 for pair in verdicts)
    assert Counter(flat)["a"] > Counter(flat)["b"]
    for pair in verdicts:
        ids = [a for a, _ in pair]
        assert len(ids) == CFG.annotators_per_pair == len(set(ids))
        assert all(a.startswith("ann_") and len(a) == 6 for a in ids)


@settings(max_examples=50, deadline=None)
@given(q_a=st.floats(0, 10), q_b=st.floats(0, 10), seed=st.integers(0, 1000))
def test_a_sharp_annotator_always_prefers_the_better_edit(q_a, q_b, seed):
    cfg = dataclasses.replace(CFG, annotator_temperature=0.0, tie_margin=0.0, annotator_noise=0.0)
    verdict = annotate(q_a, q_b, np.random.default_rng(seed), cfg)
    assert verdict == ("a" if q_a > q_b else "b" if q_b > q_a else "tie")


def test_bradley_terry_probability():
    cfg = dataclasses.replace(CFG, annotator_temperature=1.0, tie_margin=0.0, annotator_noise=0.0)
    rng = np.random.default_rng(1)
    share = np.mean([annotate(6.0, 5.0, rng, cfg) == "a" for _ in range(4000)])
    assert share == pytest.approx(1 / (1 + np.exp(-1.0)), abs=0.03)


# --- batches -------------------------------------------------------------------------------


def test_write_batch_rows_are_valid(tmp_path: Path):
    summary = write_batch(tmp_path, n_pairs=30, seed=0, cfg=CFG)
    assert summary["pairs"] == 30 and summary["rows"] == 30 * CFG.annotators_per_pair
    rows = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == summary["rows"]
    for row in rows:
        assert set(row) == PAIR_KEYS
        assert row["preference"] in {"a", "b", "tie"}
        assert row["batch_id"] == "world-s0-n30" and row["category"] in CATEGORIES
        for key in ("source_image", "edit_a", "edit_b"):
            assert not Path(row[key]).is_absolute() and (tmp_path / row[key]).is_file()
        assert row["edit_a"] != row["edit_b"]
    truth = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_text().splitlines()]
    assert len(truth) == 30
    assert len({frozenset((t["edit_a"], t["edit_b"])) for t in truth}) == 30
    assert max(Counter(t["source_image"] for t in truth).values()) >= 2
    assert any(t["quality_a"] < t["quality_b"] for t in truth)  # which candidate is "a" is random
    assert any(t["quality_a"] > t["quality_b"] for t in truth)
    graphs = [json.loads(line) for line in (tmp_path / "scene_graphs.jsonl").read_text().splitlines()]
    assert summary["images"] == len(graphs) == len(list((tmp_path / "images").glob("*.png")))
    source = None
    for g in graphs:
        assert hashlib.sha256((tmp_path / g["image"]).read_bytes()).hexdigest() == g["sha256"]
        assert (g["role"] == "source") == (g["kind"] is None) == (g["facts"] is None)
        scene = Scene.from_dict(g["scene"])
        if g["role"] == "source":
            source = scene  # a source's line comes before the lines of its edits
            continue
        facts = edit_facts(source, EditSpec.from_dict(g["spec"]), scene, ImageEffects.from_dict(g["effects"]))
        assert facts.to_dict() == g["facts"]
        assert g["human_quality"] == pytest.approx(human_quality(facts, CFG))


def test_write_batch_is_byte_identical_per_seed(tmp_path: Path):
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    write_batch(tmp_path / "x", n_pairs=12, seed=5, cfg=CFG)
    write_batch(tmp_path / "y", n_pairs=12, seed=5, cfg=CFG)
    write_batch(tmp_path / "z", n_pairs=12, seed=6, cfg=CFG)
    x, y, z = files(tmp_path / "x"), files(tmp_path / "y"), files(tmp_path / "z")
    assert x == y
    assert x["pairs.jsonl"] != z["pairs.jsonl"]
    assert any(x[k] != z.get(k) for k in x if k.endswith(".png"))


def test_editing_data_overedits_at_the_configured_rate(tmp_path: Path):
    examples = make_editing_examples(400, seed=0, cfg=CFG)
    rate = np.mean([ex.overedit for ex in examples])
    assert rate == pytest.approx(CFG.overedit_rate, abs=0.075)
    for ex in examples:
        assert ex.facts.requested_done
        assert (ex.facts.unrequested_changes >= 1) == ex.overedit
    assert {ex.spec.category for ex in examples} == set(CATEGORIES)
    clean = make_editing_examples(50, seed=0, cfg=dataclasses.replace(CFG, overedit_rate=0.0))
    assert not any(ex.overedit for ex in clean)

    summary = write_editing_dataset(tmp_path, n=8, seed=1, cfg=CFG)
    rows = [json.loads(line) for line in (tmp_path / "examples.jsonl").read_text().splitlines()]
    assert summary["examples"] == len(rows) == 8 and summary["images"] == 16
    for row in rows:
        assert (tmp_path / row["source_image"]).is_file() and (tmp_path / row["target_image"]).is_file()
        assert isinstance(row["overedit"], bool) and row["instruction"]
