"""`rrm_metrics` on hand-made scored pairs: the collapse detector and the readouts."""

from __future__ import annotations

import math

import pytest

from editr1.evaluation.rrm_eval import PairScore, headline, rrm_metrics


def pair(i: int, chosen: float, rejected: float, chosen_text: str, rejected_text: str) -> PairScore:
    return PairScore(pair_id=f"p{i}", context_id=f"c{i}", category="color_alteration", label="a",
                     chosen_sha=f"a{i}", rejected_sha=f"b{i}", chosen_parsed=chosen, rejected_parsed=rejected,
                     chosen_expected=chosen, rejected_expected=rejected, chosen_parse_ok=True,
                     rejected_parse_ok=True, chosen_answers=(1,), rejected_answers=(0,),
                     chosen_text=chosen_text, rejected_text=rejected_text)


def test_distinct_outputs_flags_a_model_that_writes_one_judgement_for_everything():
    collapsed = [pair(i, 7.0, 7.0, "same text <score>7</score>", "same text <score>7</score>") for i in range(4)]
    m = rrm_metrics(collapsed)
    assert m["distinct_outputs"] == pytest.approx(1 / 8)
    assert m["expected"]["acc_no_ties"] == 0.0  # equal scores are wrong
    reading = [pair(i, 9.0, 3.0, f"good {i}", f"bad {i}") for i in range(4)]
    m = rrm_metrics(reading)
    assert m["distinct_outputs"] == 1.0
    assert m["expected"]["acc_no_ties"] == 1.0
    line = headline(m)
    assert line["distinct_outputs"] == 1.0 and line["expected_acc_no_ties"] == 1.0


def test_an_item_in_two_pairs_counts_once():
    shared = pair(0, 9.0, 3.0, "x", "y")
    again = PairScore(**{**shared.__dict__, "pair_id": "p1", "rejected_sha": "b9", "rejected_text": "x"})
    m = rrm_metrics([shared, again])
    assert m["distinct_outputs"] == pytest.approx(2 / 3)  # items a0, b0, b9 wrote texts x, y, x
    assert not math.isnan(headline(m)["parse_rate"])
