"""Pairwise accuracy of a reward model against human preferences: pure functions, tested by hand.

    from editr1.evaluation.pairwise import (bootstrap_ci, calibrate_tie_threshold, grouped,
                                            pairwise_accuracy, pairwise_correct)
    pairwise_accuracy([8.0, 5.0, None], [6.0, 5.0, 2.0])                  # 1/3: equal and None are wrong
    t = calibrate_tie_threshold(chosen, rejected, labels)                   # on val
    pairwise_accuracy(chosen, rejected, tie_threshold=t, labels=labels)     # on test, ties included
    grouped(pairwise_correct(chosen, rejected), categories)                 # {category: {"mean", "n"}}
    bootstrap_ci(correct_a, correct_b, n=1000, seed=0)                      # paired: (diff, low, high)

The protocol (the paper's): a non-tie pair is correct iff the chosen image scores STRICTLY higher
than the rejected one; equal scores and a missing score (None: the output did not parse) count as
wrong. With a tie threshold t the model predicts "tie" iff |chosen − rejected| <= t, and a pair is
correct iff the prediction equals the human label ("chosen" or "tie").
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

LABELS = ("chosen", "tie")


def _check(chosen: Sequence[float | None], rejected: Sequence[float | None], labels: Sequence[str] | None) -> None:
    if len(chosen) != len(rejected):
        raise ValueError(f"{len(chosen)} chosen scores but {len(rejected)} rejected scores")
    if labels is not None:
        if len(labels) != len(chosen):
            raise ValueError(f"{len(chosen)} pairs but {len(labels)} labels")
        bad = sorted({str(label) for label in labels} - set(LABELS))
        if bad:
            raise ValueError(f"labels must be in {LABELS}, got {bad}")


def pairwise_correct(
    chosen: Sequence[float | None],
    rejected: Sequence[float | None],
    tie_threshold: float | None = None,
    labels: Sequence[str] | None = None,
) -> list[bool]:
    """Per pair: is the model's ordering right? (see the module docstring for the rule)

    chosen[i], rejected[i]: the scores of the human-preferred (for a tie: the first) and the other
    image of pair i; None = no score, always wrong. labels[i] in {"chosen", "tie"}; None means all
    "chosen". Without ``tie_threshold`` a "tie" label is a ValueError: drop tie pairs or calibrate a
    threshold (`calibrate_tie_threshold`).
    """
    _check(chosen, rejected, labels)
    if tie_threshold is not None and tie_threshold < 0:
        raise ValueError(f"tie_threshold must be >= 0, got {tie_threshold}")
    labels = labels if labels is not None else ["chosen"] * len(chosen)
    if tie_threshold is None and "tie" in labels:
        raise ValueError("tie pairs need a tie_threshold (or leave them out)")
    out = []
    for c, r, label in zip(chosen, rejected, labels):
        if c is None or r is None:
            out.append(False)
            continue
        diff = c - r
        if tie_threshold is None:
            out.append(diff > 0)
        elif abs(diff) <= tie_threshold:
            out.append(label == "tie")
        else:
            out.append(label == "chosen" and diff > 0)
    return out


def pairwise_accuracy(
    chosen: Sequence[float | None],
    rejected: Sequence[float | None],
    tie_threshold: float | None = None,
    labels: Sequence[str] | None = None,
) -> float:
    """Share of pairs ordered correctly (`pairwise_correct`); ValueError on no pairs."""
    correct = pairwise_correct(chosen, rejected, tie_threshold, labels)
    if not correct:
        raise ValueError("no pairs")
    return sum(correct) / len(correct)


def calibrate_tie_threshold(
    chosen: Sequence[float | None],
    rejected: Sequence[float | None],
    labels: Sequence[str],
    candidates: Sequence[float] | None = None,
) -> float:
    """The tie threshold that maximises `pairwise_accuracy` with ties on these (validation) pairs.

    candidates: thresholds to try; default 0 and every distinct |chosen − rejected| of the pairs
    (accuracy only changes at those values, so the grid is exact). Among equally good thresholds
    the smallest wins.
    """
    _check(chosen, rejected, labels)
    if candidates is None:
        diffs = {abs(c - r) for c, r in zip(chosen, rejected) if c is not None and r is not None}
        candidates = sorted({0.0} | diffs)
    if not candidates:
        raise ValueError("no candidate thresholds")
    best, best_accuracy = None, -1.0
    for t in sorted(candidates):
        accuracy = pairwise_accuracy(chosen, rejected, t, labels)
        if accuracy > best_accuracy:
            best, best_accuracy = t, accuracy
    return float(best)


def grouped(values: Sequence[float | bool], groups: Sequence[Hashable | None]) -> dict[Hashable, dict[str, float]]:
    """Mean and count of ``values`` per group: {group: {"mean": m, "n": n}}, groups sorted by name.

    E.g. per-pair correctness by category or by pair kind; a None group is left out.
    """
    if len(values) != len(groups):
        raise ValueError(f"{len(values)} values but {len(groups)} groups")
    sums: dict[Hashable, list[float]] = {}
    for value, group in zip(values, groups):
        if group is not None:
            sums.setdefault(group, []).append(float(value))
    return {g: {"mean": sum(v) / len(v), "n": len(v)} for g, v in sorted(sums.items(), key=lambda kv: str(kv[0]))}


def bootstrap_ci(
    correct_a: Sequence[bool | float],
    correct_b: Sequence[bool | float],
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Paired bootstrap of the accuracy difference A − B on the same pairs.

    correct_a[i], correct_b[i]: whether model A / B got pair i right. Resamples pairs with
    replacement ``n`` times (numpy default_rng(seed)); returns (observed difference, lower, upper)
    with the percentile interval at ``level`` (0.95: the 2.5th and 97.5th percentiles).
    """
    if len(correct_a) != len(correct_b):
        raise ValueError(f"{len(correct_a)} vs {len(correct_b)} pairs: the bootstrap is paired")
    if not correct_a:
        raise ValueError("no pairs")
    if n < 1 or not 0 < level < 1:
        raise ValueError(f"need n >= 1 and 0 < level < 1, got n={n}, level={level}")
    diff = np.asarray(correct_a, dtype=np.float64) - np.asarray(correct_b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    samples = diff[rng.integers(0, len(diff), size=(n, len(diff)))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha])
    return float(diff.mean()), float(low), float(high)
