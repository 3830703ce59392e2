"""Tests of editr1.training.stratify: the pair-kind sampler and the teacher-disagreement measure.

Run: .venv/bin/python -m pytest tests/unit/test_stratify.py
"""

from __future__ import annotations

from collections import Counter

import pytest

from editr1.training.stratify import (
    PairKindSampler,
    balanced_weights,
    disagreement_kinds,
    edit_kinds,
    kind_weights,
    teacher_accuracy,
)

# 100 pairs over 4 kinds of very different sizes: a rare kind must still come in every batch.
KINDS = ["a"] * 60 + ["b"] * 25 + ["c"] * 12 + ["d"] * 3


def test_every_kind_is_in_every_batch_when_the_batch_is_big_enough():
    sampler = PairKindSampler(KINDS, kind_weights(KINDS, set(), 1.0), seed=0)
    for _ in range(200):
        batch = sampler.next_batch(8)
        assert len(batch) == 8
        assert {KINDS[i] for i in batch} == {"a", "b", "c", "d"}


def test_a_small_batch_cycles_through_all_kinds():
    # 4 kinds, 2 slots, equal weights: every kind comes once every 2 batches (low discrepancy).
    sampler = PairKindSampler(KINDS, {k: 1.0 for k in "abcd"}, seed=1)
    for _ in range(50):
        two_batches = sampler.next_batch(2) + sampler.next_batch(2)
        assert sorted(KINDS[i] for i in two_batches) == ["a", "b", "c", "d"]


def test_weights_are_respected_in_expectation():
    # Shares a .5, b .3, c .2 over 10 slots: quotas 5, 3, 2 (each >= 1, so exact).
    kinds = ["a"] * 10 + ["b"] * 10 + ["c"] * 10
    sampler = PairKindSampler(kinds, {"a": 5.0, "b": 3.0, "c": 2.0}, seed=2)
    counts = Counter(kinds[i] for _ in range(300) for i in sampler.next_batch(10))
    assert counts == {"a": 1500, "b": 900, "c": 600}
    # Fractional quotas (B = 7: 3.5, 2.1, 1.4) are met on average over batches, within one slot.
    sampler = PairKindSampler(kinds, {"a": 5.0, "b": 3.0, "c": 2.0}, seed=3)
    counts = Counter(kinds[i] for _ in range(1000) for i in sampler.next_batch(7))
    for kind, quota in zip("abc", (3.5, 2.1, 1.4)):
        assert abs(counts[kind] - 1000 * quota) <= 1


def test_oversampling_a_disagreement_kind_multiplies_its_share():
    weights = kind_weights(KINDS, {"c"}, oversample=4.0)
    assert weights == {"a": 60.0, "b": 25.0, "c": 48.0, "d": 3.0}
    sampler = PairKindSampler(KINDS, weights, seed=0)
    counts = Counter(KINDS[i] for _ in range(500) for i in sampler.next_batch(16))
    quotas = sampler.quotas(16)
    for kind, quota in zip(sampler.kinds, quotas):
        assert abs(counts[kind] - 500 * quota) <= 1
    assert counts["c"] > counts["b"] > counts["d"] > 0  # c (12 pairs, x4) now outweighs b (25 pairs)


def test_each_pair_of_a_kind_is_seen_once_before_any_is_seen_twice():
    sampler = PairKindSampler(KINDS, kind_weights(KINDS, set(), 1.0), seed=5)
    seen_a = [i for _ in range(30) for i in sampler.next_batch(10) if KINDS[i] == "a"]
    first = seen_a[:60]
    assert sorted(first) == list(range(60))


def test_resume_gives_identical_future_batches():
    weights = kind_weights(KINDS, {"d"}, 3.0)
    run = PairKindSampler(KINDS, weights, seed=7)
    for _ in range(13):
        run.next_batch(6)
    state = run.state_dict()
    expected = [run.next_batch(6) for _ in range(40)]
    resumed = PairKindSampler(KINDS, weights, seed=7)
    resumed.load_state_dict(state)
    assert [resumed.next_batch(6) for _ in range(40)] == expected
    # The state survives a torch checkpoint round trip (numpy scalars, nested dicts).
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    again = PairKindSampler(KINDS, weights, seed=7)
    again.load_state_dict(torch.load(buffer, weights_only=False))
    assert [again.next_batch(6) for _ in range(40)] == expected


def test_resume_into_another_sampler_is_refused():
    state = PairKindSampler(KINDS, {}, seed=0).state_dict()
    with pytest.raises(ValueError, match="seed"):
        PairKindSampler(KINDS, {}, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="weights"):
        PairKindSampler(KINDS, {"a": 2.0}, seed=0).load_state_dict(state)


def test_zero_weight_removes_a_kind_and_bad_weights_fail():
    sampler = PairKindSampler(KINDS, {"d": 0.0}, seed=0)
    assert all(KINDS[i] != "d" for _ in range(50) for i in sampler.next_batch(8))
    with pytest.raises(ValueError):
        PairKindSampler(KINDS, {"a": -1.0}, seed=0)
    with pytest.raises(ValueError):
        PairKindSampler(KINDS, {k: 0.0 for k in "abcd"}, seed=0)


def test_disagreement_kinds_on_a_hand_made_example():
    # Teacher scores per (context, image). Kind "c>x": the teacher ties correct and extra (9 = 9)
    # on two pairs and inverts one: right 0/3. Kind "c>p": right on 2 of 3 (one inverted).
    # Kind "x>w": right 2/2. Kind "rare": wrong 0/1 but below min_pairs. A pair missing a score
    # and a pair of kind None are skipped.
    scores = {("k1", "c"): 9.0, ("k1", "x"): 9.0, ("k1", "p"): 7.0, ("k1", "w"): 6.0,
              ("k2", "c"): 9.0, ("k2", "x"): 9.0, ("k2", "p"): 8.0,
              ("k3", "c"): 8.0, ("k3", "x"): 9.0, ("k3", "p"): 9.0, ("k3", "w"): 5.0}

    def pair(ctx, chosen, rejected):
        return {"context_id": ctx, "chosen_sha": chosen, "rejected_sha": rejected}

    pairs = [pair("k1", "c", "x"), pair("k2", "c", "x"), pair("k3", "c", "x"),
             pair("k1", "c", "p"), pair("k2", "c", "p"), pair("k3", "c", "p"),
             pair("k1", "x", "w"), pair("k3", "x", "w"),
             pair("k1", "w", "p"),
             pair("k2", "c", "w"),   # no teacher score for k2/w: skipped
             pair("k1", "p", "w")]   # kind None: skipped
    kinds = ["c>x"] * 3 + ["c>p"] * 3 + ["x>w"] * 2 + ["rare", "c>w", None]
    assert teacher_accuracy(pairs, kinds, scores) == {"c>x": (0, 3), "c>p": (2, 3), "x>w": (2, 2), "rare": (0, 1)}
    assert disagreement_kinds(pairs, kinds, scores, threshold=0.5, min_pairs=2) == {"c>x"}
    assert disagreement_kinds(pairs, kinds, scores, threshold=0.7, min_pairs=2) == {"c>x", "c>p"}
    assert disagreement_kinds(pairs, kinds, scores, threshold=0.5) == {"c>x", "rare"}
    # Categories instead of world kinds (data without truth) work the same way: colour 2/6 right,
    # removal 2/3 (x>w twice right, "rare" wrong, the unscored pair skipped).
    categories = ["color_alteration"] * 6 + ["subject_removal"] * 4
    assert teacher_accuracy(pairs[:-1], categories, scores) == {"color_alteration": (2, 6), "subject_removal": (2, 3)}
    assert disagreement_kinds(pairs[:-1], categories, scores, threshold=0.5) == {"color_alteration"}


def test_balanced_weights_interpolate_between_the_data_shares_and_equal_kinds():
    kinds = ["a"] * 90 + ["b"] * 10
    for balance, share_b in ((0.0, 0.10), (0.5, 0.25), (1.0, 0.50)):
        w = balanced_weights(kinds, balance)
        assert w["b"] / (w["a"] + w["b"]) == pytest.approx(share_b)
    # with balance 1 a batch of 8 holds 4 of each; its default size is the sampler's own
    sampler = PairKindSampler(kinds, balanced_weights(kinds, 1.0), seed=0, batch_size=8)
    counts = Counter(kinds[i] for _ in range(50) for i in sampler.next_batch())
    assert counts == {"a": 200, "b": 200}
    with pytest.raises(ValueError, match="balance must be in"):
        balanced_weights(kinds, 1.5)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        PairKindSampler(kinds, {}, seed=0).next_batch()


def test_edit_kinds_use_the_world_kind_else_the_failed_principle_categories():
    class Truth:  # knows one edit in one context, as WorldTruth.edit_kind answers
        def edit_kind(self, sha, source_sha, instruction):
            return "wrong_object" if (sha, instruction) == ("e1", "recolor") else None

    principles = [{"question": "q1", "category": "follow"}, {"question": "q2", "category": "keep"},
                  {"question": "q3", "category": "quality"}]
    rows = [
        {"edited_sha": "e1", "source_sha": "s", "instruction": "recolor", "principles": principles, "gold": [0, 1, 1]},
        {"edited_sha": "e1", "source_sha": "s", "instruction": "move", "principles": principles, "gold": [1, 0, 0]},
        {"edited_sha": "e2", "source_sha": "s", "instruction": "x", "principles": principles, "gold": [1, 1, 1]},
    ]
    assert edit_kinds(rows, Truth()) == ["wrong_object", "fails keep+quality", "passes"]
