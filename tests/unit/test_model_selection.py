"""Model selection on val (`editr1.training.selection.BestWeights`): points, ties, NaN, restore, resume."""

import math

import pytest
import torch

from editr1.training.selection import BestWeights


def test_points_fall_evenly_over_the_budget():
    best = BestWeights(points=4)
    # progress moves in steps of 0.1: the points are crossed at 0.25, 0.5, 0.75 and at the end
    progress = [i / 10 for i in range(11)]
    crossed = [after for before, after in zip(progress, progress[1:]) if best.due(before, after)]
    assert crossed == [0.3, 0.5, 0.8, 1.0]
    assert not BestWeights(points=0).due(0.0, 1.0)
    assert BestWeights(points=1).due(0.9, 1.0) and not BestWeights(points=1).due(0.0, 0.9)


def test_the_best_value_wins_and_a_tie_keeps_the_earlier():
    best = BestWeights(points=3, start=True)
    weights = torch.zeros(2)
    for step, value in ((0, 0.60), (5, 0.70), (10, 0.70), (15, float("nan")), (20, None)):
        weights += 1.0  # the trainer's weights move on; the kept copy must not
        best.offer(step, value, {"w": weights})
    assert (best.step, best.value) == (5, 0.70)
    assert torch.equal(best.weights["w"], torch.full((2,), 2.0))
    report = best.report()
    assert report["selected_step"] == 5 and report["selected_value"] == 0.70
    assert [c["step"] for c in report["candidates"]] == [0, 5, 10, 15, 20]
    assert math.isnan(report["candidates"][4]["value"])


def test_without_points_nothing_is_kept_or_restored():
    best = BestWeights(points=0, start=True)
    assert not best.active and not best.start
    assert not best.offer(3, 0.9, {"w": torch.ones(1)})
    assert not best.restore(torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="points"):
        BestWeights(points=-1)


def test_restore_loads_the_kept_weights_and_leaves_the_rest():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    best = BestWeights(points=2)
    best.offer(1, 0.8, {"0.weight": torch.full((2, 2), 7.0)})  # a trainable subset, as SFT keeps
    untouched = model[1].weight.detach().clone()
    assert best.restore(model)
    assert torch.equal(model[0].weight, torch.full((2, 2), 7.0))
    assert torch.equal(model[1].weight, untouched)
    best.weights = {"nope": torch.zeros(1)}
    with pytest.raises(ValueError, match="nope"):
        best.restore(model)


def test_the_state_round_trips_for_an_exact_resume():
    best = BestWeights(points=2)
    best.offer(4, 0.65, {"w": torch.arange(3.0)})
    best.offer(8, 0.60, {"w": torch.zeros(3)})
    resumed = BestWeights(points=2)
    resumed.load_state_dict(best.state_dict())
    assert (resumed.step, resumed.value, resumed.candidates) == (4, 0.65, best.candidates)
    assert torch.equal(resumed.weights["w"], torch.arange(3.0))
    resumed.load_state_dict(None)  # a checkpoint of a run without selection changes nothing
    assert resumed.step == 4
