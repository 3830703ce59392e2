"""Score human preference pairs with an RRM and compute its pairwise metrics (both readouts).

    from editr1.evaluation.rrm_eval import pair_kinds, rrm_metrics, score_pairs
    pairs = curated_pairs(storage, "test").to_pylist()                     # editr1.lake
    scores = score_pairs(model, processor, pairs, ImageLoader(store), load_principles(path))
    kinds = pair_kinds(pairs, WorldTruth.from_lake(storage))               # "correct>extra_change", …
    metrics = rrm_metrics(scores, kinds)      # {"parsed": {...}, "expected": {...}, "parse_rate": …}

`score_pairs` judges every distinct (context, image) once — an image in several pairs of one
context is generated for once — with `editr1.rrm.scoring.score` (greedy by default), and keeps
both readouts: `parsed` (the strict parser's score) and `expected` (the probability-weighted score
after the generated `<score>`). Metrics follow `editr1.evaluation.pairwise`: strict inequality,
equal or missing scores are wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image
from transformers import Qwen2_5_VLForConditionalGeneration

from editr1.evaluation.pairwise import calibrate_tie_threshold, grouped, pairwise_correct
from editr1.models.processor import RRMProcessor
from editr1.rrm.items import Context, Quadruple
from editr1.rrm.principles import Principle
from editr1.rrm.scoring import READOUTS, Scored, score
from editr1.world.truth import WorldTruth

MAX_SCORE = 10


@dataclass(frozen=True)
class ItemScore:
    """The RRM's verdict on one (context, image): both readouts averaged over its samples."""

    parsed: float | None
    expected: float | None
    parse_ok: bool
    answers: tuple[int, ...]
    text: str


@dataclass(frozen=True)
class PairScore:
    """One human pair as the RRM scored it. ``chosen`` is the preferred image (for a tie: the first).

    *_parsed / *_expected: the readouts (None when no output parsed / no `<score>` was generated);
    *_parse_ok: some output of that side parsed; *_answers: per-principle 0/1 answers of the first
    parsed output (empty when its JSON list did not parse); *_text: the first output.
    """

    pair_id: str
    context_id: str
    category: str | None
    label: str
    chosen_sha: str
    rejected_sha: str
    chosen_parsed: float | None
    rejected_parsed: float | None
    chosen_expected: float | None
    rejected_expected: float | None
    chosen_parse_ok: bool
    rejected_parse_ok: bool
    chosen_answers: tuple[int, ...]
    rejected_answers: tuple[int, ...]
    chosen_text: str
    rejected_text: str

    def scores(self, readout: str) -> tuple[float | None, float | None]:
        """(chosen, rejected) scores of ``readout`` ("parsed" or "expected")."""
        if readout == "parsed":
            return self.chosen_parsed, self.rejected_parsed
        if readout == "expected":
            return self.chosen_expected, self.rejected_expected
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _item_score(scored: Scored) -> ItemScore:
    return ItemScore(
        parsed=_mean([s.parsed for s in scored.samples]),
        expected=_mean([s.expected for s in scored.samples]),
        parse_ok=scored.parse_ok,
        answers=tuple(scored.judgement.principle_scores),
        text=scored.text,
    )


def score_pairs(
    model: Qwen2_5_VLForConditionalGeneration,
    processor: RRMProcessor,
    pairs: Sequence[Mapping[str, Any]],
    images: Callable[[str], Image.Image],
    checklists: Mapping[str, Sequence[Principle]],
    *,
    n_samples: int = 1,
    batch_size: int = 32,
    max_new_tokens: int = 512,
    temperature: float = 0.0,
    seed: int = 0,
) -> list[PairScore]:
    """Score both images of every pair; one `PairScore` per pair, in order.

    pairs: curated pair rows (pair_id, context_id, source_sha, chosen_sha, rejected_sha,
    instruction, category, label); images: sha → PIL image (e.g. `editr1.lake.images.ImageLoader`);
    checklists: context_id → principles (`editr1.coldstart.load_principles`), KeyError when one is
    missing. Greedy at ``temperature == 0`` (then ``n_samples`` must be 1); sampled outputs are
    seeded by ``seed``. ``max_new_tokens`` must leave room for the whole judgement: a truncated
    output has no parsed score.
    """
    missing = sorted({p["context_id"] for p in pairs} - set(checklists))
    if missing:
        raise KeyError(f"{len(missing)} contexts have no principles (e.g. {missing[0][:12]}…): run the principles "
                       "stage for their split")
    quads: dict[tuple[str, str], Quadruple] = {}
    contexts: dict[str, Context] = {}
    for pair in pairs:
        cid = pair["context_id"]
        if cid not in contexts:
            contexts[cid] = Context(cid, pair["instruction"], images(pair["source_sha"]), pair["source_sha"],
                                    pair.get("category"))
        for sha in (pair["chosen_sha"], pair["rejected_sha"]):
            if (cid, sha) not in quads:
                quads[(cid, sha)] = Quadruple(contexts[cid], images(sha), tuple(checklists[cid]), sha)
    keys = list(quads)
    scored = score(
        model, processor, [quads[k] for k in keys], n_samples=n_samples, batch_size=batch_size,
        readout="expected", temperature=temperature, max_new_tokens=max_new_tokens,
        seed=seed if temperature > 0 else None,
    )
    items = {k: _item_score(s) for k, s in zip(keys, scored)}
    out = []
    for pair in pairs:
        c = items[(pair["context_id"], pair["chosen_sha"])]
        r = items[(pair["context_id"], pair["rejected_sha"])]
        out.append(PairScore(
            pair_id=pair["pair_id"], context_id=pair["context_id"], category=pair.get("category"),
            label=pair["label"], chosen_sha=pair["chosen_sha"], rejected_sha=pair["rejected_sha"],
            chosen_parsed=c.parsed, rejected_parsed=r.parsed, chosen_expected=c.expected,
            rejected_expected=r.expected, chosen_parse_ok=c.parse_ok, rejected_parse_ok=r.parse_ok,
            chosen_answers=c.answers, rejected_answers=r.answers, chosen_text=c.text, rejected_text=r.text,
        ))
    return out


def pair_kinds(pairs: Sequence[Mapping[str, Any]], truth: WorldTruth) -> list[str | None]:
    """The candidate kinds of each pair as "chosen_kind>rejected_kind" (e.g. "correct>extra_change").

    None when the world truth does not know one of the images in that context (data that did not
    come from the world, or an ambiguous image) or has no kind for it.
    """
    out: list[str | None] = []
    for pair in pairs:
        kinds = [truth.edit_kind(sha, pair["source_sha"], pair["instruction"])
                 for sha in (pair["chosen_sha"], pair["rejected_sha"])]
        out.append(None if None in kinds else f"{kinds[0]}>{kinds[1]}")
    return out


def score_histogram(values: Sequence[float | None]) -> list[int]:
    """Counts of scores rounded to 0, 1, …, 10 (None left out)."""
    counts = [0] * (MAX_SCORE + 1)
    for v in values:
        if v is not None:
            counts[min(MAX_SCORE, max(0, int(round(v))))] += 1
    return counts


def _readout_metrics(
    pair_scores: Sequence[PairScore], readout: str, kinds: Sequence[str | None] | None, tie_threshold: float | None
) -> dict[str, Any]:
    non_tie = [i for i, p in enumerate(pair_scores) if p.label != "tie"]
    chosen = [pair_scores[i].scores(readout)[0] for i in non_tie]
    rejected = [pair_scores[i].scores(readout)[1] for i in non_tie]
    correct = pairwise_correct(chosen, rejected)
    out: dict[str, Any] = {
        "acc_no_ties": sum(correct) / len(correct) if correct else None,
        "per_category": grouped(correct, [pair_scores[i].category for i in non_tie]),
        "missing_scores": sum(c is None or r is None for c, r in zip(chosen, rejected)),
        "equal_scores": sum(c is not None and c == r for c, r in zip(chosen, rejected)),
    }
    if kinds is not None:
        out["per_kind"] = grouped(correct, [kinds[i] for i in non_tie])
    if tie_threshold is not None and pair_scores:
        all_c = [p.scores(readout)[0] for p in pair_scores]
        all_r = [p.scores(readout)[1] for p in pair_scores]
        labels = [p.label for p in pair_scores]
        with_ties = pairwise_correct(all_c, all_r, tie_threshold, labels)
        out["tie_threshold"] = tie_threshold
        out["acc_with_ties"] = sum(with_ties) / len(with_ties)
    seen: dict[tuple[str, str], float | None] = {}
    for p in pair_scores:
        c, r = p.scores(readout)
        seen[(p.context_id, p.chosen_sha)] = c
        seen[(p.context_id, p.rejected_sha)] = r
    out["histogram"] = score_histogram(list(seen.values()))
    return out


def rrm_metrics(
    pair_scores: Sequence[PairScore],
    kinds: Sequence[str | None] | None = None,
    tie_threshold: float | Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Pairwise metrics of scored pairs, per readout.

    Returns {"pairs", "non_tie_pairs", "parse_rate", "principles_parse_rate", "parsed": {...},
    "expected": {...}} where each readout holds ``acc_no_ties`` (non-tie pairs, strict), per_category
    and (with ``kinds``, aligned with ``pair_scores``) per_kind as {group: {"mean", "n"}},
    missing_scores / equal_scores (non-tie pairs lost to a missing or an equal score), ``histogram``
    (11 counts of distinct items' rounded scores) and, with a ``tie_threshold`` (one float, or one per
    readout, e.g. from `calibrate_thresholds` on val), ``acc_with_ties`` over all pairs.
    parse_rate: share of distinct scored items with a parsed score. distinct_outputs: distinct first
    outputs / distinct scored items — a collapse detector (near 1: each edit gets its own reasoning; near
    0: the model writes one judgement whatever the images and the instruction, as an SFT run that
    learned the teacher's text but not to read its prompt does).
    """
    if kinds is not None and len(kinds) != len(pair_scores):
        raise ValueError(f"{len(pair_scores)} pairs but {len(kinds)} kinds")
    items: dict[tuple[str, str], tuple[bool, bool]] = {}
    texts: dict[tuple[str, str], str] = {}
    for p in pair_scores:
        items[(p.context_id, p.chosen_sha)] = (p.chosen_parse_ok, bool(p.chosen_answers))
        items[(p.context_id, p.rejected_sha)] = (p.rejected_parse_ok, bool(p.rejected_answers))
        texts[(p.context_id, p.chosen_sha)] = p.chosen_text
        texts[(p.context_id, p.rejected_sha)] = p.rejected_text
    out: dict[str, Any] = {
        "pairs": len(pair_scores),
        "non_tie_pairs": sum(p.label != "tie" for p in pair_scores),
        "parse_rate": sum(ok for ok, _ in items.values()) / len(items) if items else None,
        "principles_parse_rate": sum(a for _, a in items.values()) / len(items) if items else None,
        "distinct_outputs": len(set(texts.values())) / len(texts) if texts else None,
    }
    for readout in READOUTS:
        threshold = tie_threshold.get(readout) if isinstance(tie_threshold, Mapping) else tie_threshold
        out[readout] = _readout_metrics(pair_scores, readout, kinds, threshold)
    return out


def calibrate_thresholds(pair_scores: Sequence[PairScore]) -> dict[str, float]:
    """Per readout, the tie threshold that maximises accuracy with ties on these (val) pairs."""
    labels = [p.label for p in pair_scores]
    return {
        readout: calibrate_tie_threshold([p.scores(readout)[0] for p in pair_scores],
                                         [p.scores(readout)[1] for p in pair_scores], labels)
        for readout in READOUTS
    }


def headline(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The few numbers worth a line in a log: parse rate and accuracy per readout (None → NaN)."""
    nan = float("nan")
    out = {key: metrics[key] if metrics.get(key) is not None else nan for key in ("parse_rate", "distinct_outputs")}
    for readout in READOUTS:
        for key in ("acc_no_ties", "acc_with_ties"):
            if key in metrics[readout]:
                value = metrics[readout][key]
                out[f"{readout}_{key}"] = value if value is not None else nan
    return out
