"""Trace selection (DESIGN §5) on hand-written judgements."""

from editr1.coldstart.selection import agreement, contradicts, select_trace
from editr1.rrm.parser import parse_output, render_output

QUESTIONS = ["q1", "q2", "q3", "q4"]


def trace(answers, score):
    return parse_output(render_output("reasoning", QUESTIONS, answers, score))


def test_agreement_counts_matches_and_missing_answers():
    assert agreement([1, 0, 1, 1], [1, 1, 1, 1]) == 0.75
    assert agreement([1, 1], [1, 1, 1, 1]) == 0.5
    assert agreement([], []) == 0.0


def test_best_agreement_wins():
    gold = [1, 1, 0, 1]
    judgements = [trace([1, 1, 1, 1], 9), trace([1, 1, 0, 1], 7), trace([0, 0, 0, 0], 1)]
    selection = select_trace(judgements, gold)
    assert selection.index == 1 and selection.agreement == 1.0


def test_tie_on_agreement_goes_to_higher_average_then_lower_index():
    gold = [1, 1, 1, 1]
    # both agree on 3 of 4; the second has the higher average of answers
    judgements = [trace([1, 1, 1, 0], 6), trace([1, 1, 1, 0], 9), trace([1, 1, 0, 1], 2)]
    # averages: 0.75, 0.75, 0.75 → lowest index wins
    assert select_trace(judgements, gold).index == 0
    judgements = [trace([0, 0, 1, 1], 6), trace([1, 1, 1, 0], 6)]
    gold = [1, 0, 1, 1]  # agreements: 0.75 and 0.5 → first; check average tie-break separately
    assert select_trace(judgements, gold).index == 0
    gold = [1, 1, 1, 1]
    judgements = [trace([1, 0, 0, 0], 2), trace([1, 1, 1, 0], 9)]  # 0.25 vs 0.75
    assert select_trace(judgements, gold).index == 1


def test_average_breaks_agreement_ties():
    gold = [1, 0, 1, 0]
    low = trace([1, 1, 0, 0], 5)  # agreement 0.5, average 0.5
    high = trace([1, 1, 1, 1], 9)  # agreement 0.5, average 1.0
    assert select_trace([low, high], gold).index == 1


def test_unparseable_never_wins_and_none_when_all_fail():
    gold = [1, 1, 1, 1]
    bad = parse_output("no score here")
    assert select_trace([bad, trace([0, 0, 0, 0], 0)], gold).index == 1
    none = select_trace([bad, bad], gold)
    assert none.index is None and none.agreement == 0.0


def test_contradiction_is_strict():
    assert contradicts(3.0, 7.0)
    assert not contradicts(7.0, 7.0)
    assert not contradicts(None, 7.0)
