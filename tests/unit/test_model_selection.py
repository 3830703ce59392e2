"""Model selection on val (`editr1.training.selection.BestWeights`): points, ties, NaN, restore, resume."""

import math

import pytest
import torch

from editr1.training.selection import BestWeights, TailAverage


def entry(step, value):
    return {"step": step, "expected_acc_no_ties": value}


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
        best.offer({"step": step, "expected_acc_no_ties": value}, {"w": weights})
    assert (best.step, best.value, best.entry) == (5, 0.70, entry(5, 0.70))
    assert torch.equal(best.weights["w"], torch.full((2,), 2.0))
    report = best.report()
    assert report["selected_step"] == 5 and report["selected_value"] == 0.70
    assert [c["step"] for c in report["candidates"]] == [0, 5, 10, 15, 20]
    assert math.isnan(report["candidates"][4]["value"])


def test_without_points_nothing_is_kept_or_restored():
    best = BestWeights(points=0, start=True)
    assert not best.active and not best.start
    assert not best.offer({"step": 3, "expected_acc_no_ties": 0.9}, {"w": torch.ones(1)})
    assert not best.restore(torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="points"):
        BestWeights(points=-1)


def test_restore_loads_the_kept_weights_and_leaves_the_rest():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    best = BestWeights(points=2)
    best.offer(entry(1, 0.8), {"0.weight": torch.full((2, 2), 7.0)})  # a trainable subset, as SFT keeps
    untouched = model[1].weight.detach().clone()
    assert best.restore(model)
    assert torch.equal(model[0].weight, torch.full((2, 2), 7.0))
    assert torch.equal(model[1].weight, untouched)
    best.weights = {"nope": torch.zeros(1)}
    with pytest.raises(ValueError, match="nope"):
        best.restore(model)


def test_the_state_round_trips_for_an_exact_resume():
    best = BestWeights(points=2)
    best.offer(entry(4, 0.65), {"w": torch.arange(3.0)})
    best.offer(entry(8, 0.60), {"w": torch.zeros(3)})
    resumed = BestWeights(points=2)
    resumed.load_state_dict(best.state_dict())
    assert (resumed.step, resumed.value, resumed.entry) == (4, 0.65, entry(4, 0.65))
    assert resumed.candidates == best.candidates
    assert torch.equal(resumed.weights["w"], torch.arange(3.0))
    resumed.load_state_dict(None)  # a checkpoint of a run without selection changes nothing
    assert resumed.step == 4


def test_the_tail_average_is_the_mean_of_the_last_steps_weights():
    average = TailAverage(tail=0.5)
    # six steps of a run: only those that end past half of it are averaged (steps 4, 5, 6)
    for step in range(1, 7):
        average.update(step / 6, {"w": torch.full((2,), float(step)), "n": torch.tensor(step)})
    assert average.count == 3
    assert torch.allclose(average.weights["w"], torch.full((2,), 5.0))  # (4 + 5 + 6) / 3
    assert int(average.weights["n"]) == 6  # integer tensors are not averaged: the last is kept
    model = torch.nn.Linear(2, 1, bias=False)
    resumed = TailAverage(tail=0.5)
    resumed.load_state_dict(average.state_dict())
    assert resumed.count == 3 and torch.equal(resumed.weights["w"], average.weights["w"])
    with pytest.raises(ValueError, match="unexpected"):
        resumed.apply(model)
    fits = TailAverage(tail=1.0)
    fits.update(0.5, {"weight": torch.ones(1, 2)})
    fits.update(1.0, {"weight": torch.full((1, 2), 3.0)})
    assert fits.apply(model) and torch.equal(model.weight.detach(), torch.full((1, 2), 2.0))
    assert not TailAverage(tail=0.0).update(1.0, {"w": torch.ones(1)})
    assert not TailAverage(tail=0.0).apply(model)
    with pytest.raises(ValueError, match="tail"):
        TailAverage(tail=1.5)
