"""Pairwise accuracy, tie calibration, grouping and the paired bootstrap, against hand-computed values.

Run: .venv/bin/python -m pytest tests/unit/test_pairwise.py
"""

from __future__ import annotations

import pytest

from editr1.config import EvaluateConfig
from editr1.evaluation.pairwise import (
    bootstrap_ci,
    calibrate_tie_threshold,
    grouped,
    pairwise_accuracy,
    pairwise_correct,
)
from editr1.evaluation.report import calibration_sample


def test_strict_inequality_equal_and_missing_scores_are_wrong():
    chosen = [8.0, 5.0, None, 3.0, 7.0, 6.5]
    rejected = [6.0, 5.0, 2.0, 4.0, None, 6.4]
    # right, equal (wrong), chosen missing (wrong), reversed (wrong), rejected missing (wrong), right
    assert pairwise_correct(chosen, rejected) == [True, False, False, False, False, True]
    assert pairwise_accuracy(chosen, rejected) == pytest.approx(2 / 6)


def test_accuracy_with_a_tie_threshold():
    chosen = [8.0, 5.0, 5.2, 9.0, 4.0, None]
    rejected = [6.0, 5.0, 5.0, 8.9, 6.0, 1.0]
    labels = ["chosen", "tie", "tie", "chosen", "tie", "tie"]
    # t = 0.25: diffs 2.0 (chosen ✓), 0 (tie ✓), 0.2 (tie ✓), 0.1 (predicted tie, label chosen ✗),
    # -2.0 (predicted rejected, label tie ✗), None (✗) → 3/6.
    assert pairwise_correct(chosen, rejected, 0.25, labels) == [True, True, True, False, False, False]
    assert pairwise_accuracy(chosen, rejected, 0.25, labels) == pytest.approx(0.5)
    # t = 0: only exact equality is a tie → pairs 1 and 2 (5.2 vs 5.0 → chosen predicted, label tie ✗).
    assert pairwise_correct(chosen, rejected, 0.0, labels) == [True, True, False, True, False, False]
    # A reversed non-tie pair stays wrong with a threshold.
    assert pairwise_correct([1.0], [5.0], 0.5, ["chosen"]) == [False]


def test_tie_labels_need_a_threshold_and_lengths_must_match():
    with pytest.raises(ValueError, match="tie_threshold"):
        pairwise_correct([1.0], [0.0], labels=["tie"])
    with pytest.raises(ValueError, match="labels"):
        pairwise_correct([1.0], [0.0], 0.1, labels=["rejected"])
    with pytest.raises(ValueError):
        pairwise_correct([1.0, 2.0], [0.0])
    with pytest.raises(ValueError, match="no pairs"):
        pairwise_accuracy([], [])


def test_calibration_picks_the_obvious_threshold():
    # Ties differ by at most 0.3, preferences by at least 1.0: any t in [0.3, 1.0) is perfect and the
    # smallest candidate reaching the best accuracy is 0.3.
    chosen = [7.0, 5.1, 6.0, 9.0, 4.3, 8.0]
    rejected = [5.0, 5.0, 5.7, 8.0, 4.0, 2.0]
    labels = ["chosen", "tie", "tie", "chosen", "tie", "chosen"]
    t = calibrate_tie_threshold(chosen, rejected, labels)
    assert t == pytest.approx(0.3)
    assert pairwise_accuracy(chosen, rejected, t, labels) == 1.0
    # Without tie labels the best threshold is 0 (any tie prediction is a mistake).
    assert calibrate_tie_threshold(chosen, rejected, ["chosen"] * 6) == 0.0
    # An explicit grid.
    assert calibrate_tie_threshold(chosen, rejected, labels, candidates=[0.0, 0.5, 2.0]) == 0.5


def test_grouped_means_and_counts():
    values = [True, False, True, True, False]
    groups = ["b", "a", "b", None, "a"]
    assert grouped(values, groups) == {"a": {"mean": 0.0, "n": 2}, "b": {"mean": 1.0, "n": 2}}
    with pytest.raises(ValueError):
        grouped([True], [])


def test_bootstrap_ci_contains_the_true_difference():
    # A is right on 80 of 100 pairs, B on 60 of them (B's right pairs are a subset of A's): the true
    # difference is 0.2, every resample's difference is >= 0.
    correct_a = [True] * 80 + [False] * 20
    correct_b = [True] * 60 + [False] * 40
    diff, low, high = bootstrap_ci(correct_a, correct_b, n=2000, seed=1)
    assert diff == pytest.approx(0.2)
    assert low < 0.2 < high
    assert 0.0 <= low and high < 0.35
    # Same seed, same interval; identical models: a zero-width interval at 0.
    assert bootstrap_ci(correct_a, correct_b, n=2000, seed=1) == (diff, low, high)
    assert bootstrap_ci(correct_a, correct_a, n=100) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="paired"):
        bootstrap_ci([True], [True, False])


def test_calibration_sample_is_a_seeded_subset_in_order():
    pairs = [{"pair_id": f"p{i:02d}"} for i in range(40)]
    sample = calibration_sample(pairs, 10, seed=3)
    assert len(sample) == 10
    ids = [p["pair_id"] for p in sample]
    assert ids == sorted(ids)  # kept in the split's order
    assert len(set(ids)) == 10
    assert sample == calibration_sample(pairs, 10, seed=3)  # same seed, same pairs
    assert sample != calibration_sample(pairs, 10, seed=4)
    assert ids != [f"p{i:02d}" for i in range(10)]  # a sample, not the first rows
    assert calibration_sample(pairs, 0, seed=3) == pairs  # 0: all of them
    assert calibration_sample(pairs, 40, seed=3) == pairs


def test_negative_pair_caps_are_refused():
    with pytest.raises(ValueError, match="calibration_pairs"):
        EvaluateConfig(calibration_pairs=-1)
