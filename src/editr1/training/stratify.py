"""Batches of GCPO pairs stratified over pair kinds, oversampling the kinds the teacher gets wrong.

    from editr1.training.stratify import PairKindSampler, disagreement_kinds, kind_weights
    flagged = disagreement_kinds(train_pairs, kinds, teacher_scores, threshold=0.5)
    sampler = PairKindSampler(kinds, kind_weights(kinds, flagged, oversample=3.0), seed=0)
    indices = sampler.next_batch(8)                      # list[int] into train_pairs
    state = sampler.state_dict(); sampler.load_state_dict(state)   # exact resume

Why (FINDINGS.md, "GCPO can fix the teacher's bias"): with uniform batches GCPO re-calibrates
scores but leaves the teacher's inversions alone; oversampling the disagreement kinds fixes them,
but every kind left out of the batches drifts. So every kind stays in the stream at a known rate
and the disagreement kinds come more often: a sampler, not a loss change.

A pair's kind is what distinguishes its two edits ("correct>extra_change" in the synthetic world,
from `editr1.evaluation.rrm_eval.pair_kinds`); for data without world truth it is the pair's
category. Nothing here knows which kinds are biased: `disagreement_kinds` measures it from the
teacher's own scores on the train pairs.

SFT uses the same sampler over its judgements (`sft.kind_balance`): `edit_kinds` gives each edit's
kind and `balanced_weights` shares between the data's own (0) and every kind equally (1).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

TeacherScores = Mapping[tuple[str, str], float]
"""(context_id, image sha) -> the teacher's score of that edited image (cold-start trajectories)."""


class PairKindSampler:
    """Endless batches of pair indices, stratified over kinds with per-kind weights.

    kinds: the kind of each pair (index i -> kinds[i]); weights: kind -> weight > 0 (a kind
    missing from the mapping weighs 1; a weight of 0 removes the kind); seed: everything random
    (which pair of a kind comes next, ties between kinds, the order inside a batch) derives from it.

    Allocation of a batch of B pairs over the K kinds (shares p_k = w_k / sum w):
    - when B >= K every kind gets one slot first (presence wins) and the rest is shared by the
      quotas max(0, B p_k - 1); otherwise all B slots are shared by the quotas B p_k;
    - the quotas are turned into integer counts by largest remainder WITH CARRY: what a kind was
      given above or below its quota is carried into the next batch, so over any run of batches
      each kind's count stays within one of its accumulated quota. Long-run shares are exactly
      p_k whenever B p_k >= 1 for every kind (or B < K); otherwise the floor of one slot per
      kind raises the small kinds and the others' quotas shrink to make room.
    Inside a kind, pairs are drawn without replacement from a permutation per (seed, kind, epoch):
    each pair of a kind is seen once before any is seen twice.
    """

    def __init__(self, kinds: Sequence[Hashable], weights: Mapping[Hashable, float], seed: int,
                 batch_size: int | None = None):
        if len(kinds) == 0:
            raise ValueError("no pairs to sample from")
        bad = {k: w for k, w in weights.items() if not (math.isfinite(w) and w >= 0)}
        if bad:
            raise ValueError(f"weights must be finite and >= 0, got {bad}")
        # Kinds in a fixed order (first appearance), so the state does not depend on dict order.
        order = list(dict.fromkeys(kinds))
        self.kinds: list[Hashable] = [k for k in order if weights.get(k, 1.0) > 0]
        if not self.kinds:
            raise ValueError("every kind has weight 0: nothing to sample")
        self.seed = seed
        self.batch_size = batch_size  # the default of next_batch
        self.n = len(kinds)
        members: dict[Hashable, list[int]] = {k: [] for k in self.kinds}
        for index, kind in enumerate(kinds):
            if kind in members:
                members[kind].append(index)
        self._members = [np.asarray(members[k], dtype=np.int64) for k in self.kinds]
        w = np.asarray([float(weights.get(k, 1.0)) for k in self.kinds])
        self.shares = w / w.sum()
        self._carry = np.zeros(len(self.kinds))
        self._epoch = [0] * len(self.kinds)
        self._position = [0] * len(self.kinds)
        self._perm_cache: dict[int, tuple[int, np.ndarray]] = {}
        self._rng = np.random.default_rng([seed, 0x5EED])

    # ------------------------------------------------------------------ allocation

    def quotas(self, batch_size: int) -> np.ndarray:
        """Expected count of each kind (in `self.kinds` order) in a batch of `batch_size`."""
        minimum = 1.0 if batch_size >= len(self.kinds) else 0.0
        extra = np.maximum(batch_size * self.shares - minimum, 0.0)
        free = batch_size - minimum * len(self.kinds)
        if extra.sum() > 0:
            extra = extra * (free / extra.sum())
        else:
            extra = np.full(len(self.kinds), free / len(self.kinds))
        return minimum + extra

    def _allocate(self, batch_size: int) -> np.ndarray:
        minimum = 1 if batch_size >= len(self.kinds) else 0
        quota = self.quotas(batch_size) - minimum
        target = self._carry + quota
        counts = np.floor(target).astype(np.int64).clip(min=0)
        left = batch_size - minimum * len(self.kinds) - int(counts.sum())
        if left > 0:
            # Largest remainder; exact ties broken at random (a fixed order would favour kind 0).
            remainder = target - counts
            jitter = self._rng.random(len(self.kinds)) * 1e-9
            counts[np.argsort(-(remainder + jitter), kind="stable")[:left]] += 1
        while left < 0:  # only when carries went below zero: take from the most over-served kind
            surplus = np.where(counts > 0, counts - target, -np.inf)
            counts[int(np.argmax(surplus))] -= 1
            left += 1
        self._carry = target - counts
        return counts + minimum

    # ------------------------------------------------------------------ drawing

    def _permutation(self, k: int, epoch: int) -> np.ndarray:
        cached = self._perm_cache.get(k)
        if cached is None or cached[0] != epoch:
            perm = np.random.default_rng([self.seed, k, epoch]).permutation(len(self._members[k]))
            self._perm_cache[k] = (epoch, perm)
            return perm
        return cached[1]

    def _take(self, k: int, count: int) -> list[int]:
        out: list[int] = []
        size = len(self._members[k])
        while len(out) < count:
            if self._position[k] >= size:
                self._epoch[k] += 1
                self._position[k] = 0
            perm = self._permutation(k, self._epoch[k])
            take = min(count - len(out), size - self._position[k])
            chosen = perm[self._position[k] : self._position[k] + take]
            out += self._members[k][chosen].tolist()
            self._position[k] += take
        return out

    def next_batch(self, batch_size: int | None = None) -> list[int]:
        """The next `batch_size` pair indices (a kind smaller than its count repeats its pairs)."""
        batch_size = self.batch_size if batch_size is None else batch_size
        if batch_size is None or batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        counts = self._allocate(batch_size)
        batch = [i for k, c in enumerate(counts) if c > 0 for i in self._take(k, int(c))]
        return [batch[j] for j in self._rng.permutation(len(batch))]

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed, "n": self.n, "kinds": list(self.kinds), "shares": self.shares.tolist(),
            "carry": self._carry.tolist(), "epoch": list(self._epoch), "position": list(self._position),
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue exactly where `state` was taken; ValueError if it belongs to other data/weights."""
        for key, mine in (("seed", self.seed), ("n", self.n), ("kinds", list(self.kinds))):
            if state[key] != mine:
                raise ValueError(f"sampler state was saved with {key}={state[key]!r}, this sampler has {mine!r}")
        if not np.allclose(state["shares"], self.shares, rtol=0, atol=1e-12):
            raise ValueError("sampler state was saved with other kind weights")
        self._carry = np.asarray(state["carry"], dtype=float)
        self._epoch = [int(e) for e in state["epoch"]]
        self._position = [int(p) for p in state["position"]]
        self._rng.bit_generator.state = state["rng"]


def edit_kinds(rows: Sequence[Mapping[str, Any]], truth: Any) -> list[str]:
    """The kind of each trajectory row's edited image: the world's candidate kind ("wrong_object")
    where `truth` (an `editr1.world.truth.WorldTruth`) knows the image in the row's context, else
    the principle categories its gold labels fail ("fails keep+quality", or "passes")."""
    out = []
    for row in rows:
        kind = truth.edit_kind(row["edited_sha"], row["source_sha"], row["instruction"])
        if kind is None:
            failed = sorted({p["category"] for p, g in zip(row["principles"], row["gold"] or ()) if not g})
            kind = "fails " + "+".join(failed) if failed else "passes"
        out.append(kind)
    return out


def balanced_weights(kinds: Sequence[Hashable], balance: float) -> dict[Hashable, float]:
    """Per-kind weights for `PairKindSampler` that give kind k a share proportional to
    count_k ** (1 - balance): 0 keeps the data's own shares, 1 makes every kind equally frequent."""
    if not 0.0 <= balance <= 1.0:
        raise ValueError(f"balance must be in [0, 1], got {balance}")
    return {k: float(n) ** (1.0 - balance) for k, n in Counter(kinds).items()}


def teacher_accuracy(pairs: Sequence[Mapping[str, Any]], kinds: Sequence[Hashable | None],
                     teacher_scores: TeacherScores) -> dict[Hashable, tuple[int, int]]:
    """Per kind: (pairs the teacher orders like the annotators, pairs it scored both sides of).

    pairs: rows with context_id, chosen_sha, rejected_sha (human non-tie pairs); kinds: parallel
    to pairs (None: the pair is skipped). The teacher is right on a pair iff its score of the
    chosen image is strictly above its score of the rejected one (a tie counts as wrong: GCPO's
    strict comparisons give a tie no reward either). Pairs missing a teacher score are skipped.
    """
    if len(pairs) != len(kinds):
        raise ValueError(f"{len(pairs)} pairs but {len(kinds)} kinds")
    right: Counter = Counter()
    scored: Counter = Counter()
    for pair, kind in zip(pairs, kinds):
        if kind is None:
            continue
        chosen = teacher_scores.get((pair["context_id"], pair["chosen_sha"]))
        rejected = teacher_scores.get((pair["context_id"], pair["rejected_sha"]))
        if chosen is None or rejected is None or math.isnan(chosen) or math.isnan(rejected):
            continue
        scored[kind] += 1
        right[kind] += int(chosen > rejected)
    return {k: (right[k], scored[k]) for k in scored}


def disagreement_kinds(pairs: Sequence[Mapping[str, Any]], kinds: Sequence[Hashable | None],
                       teacher_scores: TeacherScores, threshold: float, min_pairs: int = 1) -> set[Hashable]:
    """Kinds whose train pairs the teacher orders like the annotators on less than `threshold` of them.

    See `teacher_accuracy` for what "right" means. min_pairs: a kind with fewer scored pairs is
    not judged (in the synthetic world a handful of pairs carry labels that annotator noise
    reversed, e.g. white_border>correct, and the teacher "gets them wrong" by being right).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return {k for k, (right, n) in teacher_accuracy(pairs, kinds, teacher_scores).items()
            if n >= min_pairs and right / n < threshold}


def kind_weights(kinds: Sequence[Hashable], flagged: set[Hashable], oversample: float) -> dict[Hashable, float]:
    """Sampler weights: each kind its share of the pairs (proportional allocation), times
    `oversample` for the flagged (disagreement) kinds."""
    if oversample <= 0:
        raise ValueError(f"oversample must be > 0, got {oversample}")
    counts = Counter(kinds)
    return {k: n * (oversample if k in flagged else 1.0) for k, n in counts.items()}
