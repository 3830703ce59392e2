"""The `evaluate` stage for reward models: every RRM named, plus the baselines, on the same held-out
human pairs, in one table.

    run_rrm_eval(cfg, storage, models={"sft": path, "gcpo": path}, principles_path, out, teacher)

For each model: val pairs (all, or a seeded sample of `evaluate.calibration_pairs`) calibrate the tie
threshold per readout, test pairs give accuracy without ties (strict; equal or missing scores are wrong —
the paper's protocol) and with ties, per category, per pair kind (world batches), parse rate, score
histogram, and per-principle agreement with the verifier's gold labels. Baselines: `random` (seeded
uniform scores) and `teacher` (the cold-start teacher's own parsed scores). Paired bootstrap 95% CIs of
accuracy differences between models.
Writes `out/rrm_eval.json` and a readable `out/rrm_eval.md`. With `evaluate.workers` > 1 the models
are scored in that many processes (`score_models`).
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from editr1.coldstart.checklists import load_principles
from editr1.config import EvaluateConfig
from editr1.evaluation.pairwise import bootstrap_ci, pairwise_correct
from editr1.evaluation.rrm_eval import PairScore, calibrate_thresholds, pair_kinds, rrm_metrics, score_pairs
from editr1.lake.catalog import curated_pairs
from editr1.lake.images import ImageLoader
from editr1.lake.objects import ObjectStore
from editr1.models import load_rrm
from editr1.rrm.items import Context, Quadruple
from editr1.rrm.parser import parse_output
from editr1.teachers.base import Teacher
from editr1.world.truth import WorldTruth

READOUTS = ("parsed", "expected")


def _pairs(storage: Path, split: str, limit: int) -> list[dict[str, Any]]:
    rows = curated_pairs(storage, split).to_pylist()
    return rows[:limit] if limit else rows


def calibration_sample(pairs: Sequence[dict[str, Any]], size: int, seed: int) -> list[dict[str, Any]]:
    """``size`` of ``pairs`` drawn without replacement (seeded), in their order; all of them when
    ``size`` is 0 or not smaller. A sample, not the first rows: a split's rows come grouped by source."""
    if not size or size >= len(pairs):
        return list(pairs)
    keep = np.sort(np.random.default_rng(seed).choice(len(pairs), size, replace=False))
    return [pairs[i] for i in keep]


def _correct(scores: list[PairScore], readout: str) -> list[bool]:
    non_tie = [p for p in scores if p.label != "tie"]
    return pairwise_correct([p.scores(readout)[0] for p in non_tie], [p.scores(readout)[1] for p in non_tie])


def _principle_agreement(scores: list[PairScore], gold: Mapping[tuple[str, str], list[int]]) -> float | None:
    hits = total = 0
    for p in scores:
        for sha, answers in ((p.chosen_sha, p.chosen_answers), (p.rejected_sha, p.rejected_answers)):
            labels = gold.get((p.context_id, sha))
            if labels is None:
                continue
            total += len(labels)
            hits += sum(1 for a, g in zip(answers, labels) if a == g)
    return hits / total if total else None


def _teacher_scores(teacher: Teacher, pairs: list[dict], images, checklists) -> tuple[list[bool], int, dict]:
    """The teacher's own greedy judgement of every test item: per non-tie pair whether it orders the
    pair strictly right, how many pairs it scores equal, and its gold labels (verifier)."""
    items: dict[tuple[str, str], Quadruple] = {}
    for p in pairs:
        ctx = Context(p["context_id"], p["instruction"], images(p["source_sha"]), p["source_sha"], p["category"])
        for sha in (p["chosen_sha"], p["rejected_sha"]):
            items.setdefault((p["context_id"], sha), Quadruple(ctx, images(sha), tuple(checklists[p["context_id"]]), sha))
    keys = list(items)
    texts = teacher.traces([items[k] for k in keys], 1, 0.0)
    judged = {k: parse_output(t[0]).score for k, t in zip(keys, texts)}
    gold = {k: teacher.verify(items[k]) for k in keys}
    non_tie = [p for p in pairs if p["label"] != "tie"]
    chosen = [judged[(p["context_id"], p["chosen_sha"])] for p in non_tie]
    rejected = [judged[(p["context_id"], p["rejected_sha"])] for p in non_tie]
    ties = sum(1 for a, b in zip(chosen, rejected) if a is not None and a == b)
    return pairwise_correct(chosen, rejected), ties, gold


def _score_job(path: str | Path, pairs: list[dict], store: ObjectStore, checklists: Mapping, kwargs: dict,
               loaded: dict | None = None) -> list[PairScore]:
    """One (model, split) job. `loaded` keeps the last model loaded (a worker process scores the
    other split of the same model without loading it again)."""
    loaded = _LOADED if loaded is None else loaded
    if loaded.get("path") != str(path):
        loaded.clear()
        loaded.update(path=str(path), model=load_rrm(path))
    model, processor = loaded["model"]
    return score_pairs(model, processor, pairs, ImageLoader(store), checklists, **kwargs)


_LOADED: dict[str, Any] = {}  # a worker process's last loaded model (`_score_job`)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def score_models(cfg: EvaluateConfig, models: Mapping[str, str | Path], test: Sequence[dict],
                 calib: Sequence[dict], store: ObjectStore, checklists: Mapping
                 ) -> dict[str, tuple[list[PairScore], list[PairScore]]]:
    """name → (scored test pairs, scored calibration pairs). Every (model, split) is one
    `score_pairs` call; with ``cfg.workers`` > 1 the calls run in that many spawned processes, one
    thread each, so the scores are those of the same calls in one process (tested)."""
    kwargs = dict(n_samples=cfg.n_samples, batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens,
                  temperature=cfg.temperature, seed=cfg.seed)
    jobs = [(name, split, pairs) for name in models for split, pairs in (("test", test), ("calib", calib)) if pairs]
    out: dict[str, dict[str, list[PairScore]]] = {name: {"test": [], "calib": []} for name in models}
    if cfg.workers > 1 and len(jobs) > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(cfg.workers, len(jobs)), mp_context=ctx, initializer=_one_thread) as pool:
            # longest first, so that the workers end close together
            futures = [(name, split, pool.submit(_score_job, models[name], list(pairs), store, checklists, kwargs))
                       for name, split, pairs in sorted(jobs, key=lambda job: -len(job[2]))]
            for name, split, future in futures:
                out[name][split] = future.result()
    else:
        held: dict[str, Any] = {}  # each model loaded once, for both of its splits
        for name, split, pairs in jobs:
            out[name][split] = _score_job(models[name], list(pairs), store, checklists, kwargs, loaded=held)
    return {name: (v["test"], v["calib"]) for name, v in out.items()}


def run_rrm_eval(cfg: EvaluateConfig, storage: Path, models: Mapping[str, str | Path], principles_path: Path,
                 store: ObjectStore, out: Path, teacher: Teacher | None = None) -> dict[str, Any]:
    """Evaluates each named model (name → `load_rrm` path or hub id) and the baselines; see the module docstring."""
    started = time.perf_counter()
    checklists = load_principles(principles_path)
    images = ImageLoader(store)
    test = _pairs(storage, cfg.split, cfg.max_pairs)
    calib = calibration_sample(_pairs(storage, cfg.calibration_split, cfg.max_pairs), cfg.calibration_pairs, cfg.seed)
    if not test:
        raise ValueError(f"no curated pairs in split {cfg.split!r}")
    truth = WorldTruth.from_lake(storage)
    kinds = pair_kinds(test, truth) if len(truth) else None
    non_tie = [p for p in test if p["label"] != "tie"]
    report: dict[str, Any] = {"split": cfg.split, "pairs": len(test), "non_tie_pairs": len(non_tie), "models": {},
                              "baselines": {}}
    correct_by_model: dict[str, dict[str, list[bool]]] = {}

    rng = np.random.default_rng(cfg.seed)
    random_correct = pairwise_correct(list(rng.uniform(0, 10, len(non_tie))), list(rng.uniform(0, 10, len(non_tie))))
    report["baselines"]["random"] = {"acc_no_ties": sum(random_correct) / len(random_correct) if random_correct else None}
    gold: dict = {}
    if teacher is not None:
        t_correct, ties, gold = _teacher_scores(teacher, test, images, checklists)
        n = len(t_correct)
        # Ties counted as half right: what a model that copies the teacher and breaks its ties at
        # random reaches — the ceiling of SFT on the teacher's data.
        report["baselines"][f"teacher ({teacher.name})"] = {
            "acc_no_ties": sum(t_correct) / n if n else None, "tie_frac": ties / n if n else None,
            "acc_ties_half": (sum(t_correct) + ties / 2) / n if n else None}

    scored = score_models(cfg, models, test, calib, store, checklists)
    for name in models:
        scores, calib_scores = scored[name]
        thresholds = calibrate_thresholds(calib_scores) if calib else None
        metrics = rrm_metrics(scores, kinds, thresholds)
        metrics["principle_agreement"] = _principle_agreement(scores, gold) if gold else None
        report["models"][name] = metrics
        correct_by_model[name] = {r: _correct(scores, r) for r in READOUTS}

    names = list(models)
    report["differences"] = {}
    for i, a in enumerate(names):
        for b in names[:i]:
            for readout in READOUTS:
                diff, lo, hi = bootstrap_ci(correct_by_model[a][readout], correct_by_model[b][readout],
                                            n=cfg.bootstrap, seed=cfg.seed)
                report["differences"][f"{a} - {b} ({readout})"] = {"diff": diff, "ci95": [lo, hi]}
    report["seconds"] = round(time.perf_counter() - started, 2)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rrm_eval.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    (out / "rrm_eval.md").write_text(markdown(report))
    return report


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def markdown(report: Mapping[str, Any]) -> str:
    """The report as a markdown table (accuracy without ties, both readouts) plus per-kind rows."""
    lines = [f"# RRM evaluation — split `{report['split']}` ({report['non_tie_pairs']} non-tie pairs)", "",
             "| model | acc parsed | acc expected | acc w/ ties (expected) | parse rate | principle agreement |",
             "|---|---|---|---|---|---|"]
    for name, base in report["baselines"].items():
        lines.append(f"| {name} | {_pct(base['acc_no_ties'])} | | | | |")
    notes = [f"- {name} scores {_pct(base['tie_frac'])}% of the pairs equal (wrong by the strict rule); with "
             f"those ties counted as half right it reaches {_pct(base['acc_ties_half'])}% — what a model that "
             "copies it and breaks its ties at random reaches." for name, base in report["baselines"].items()
             if base.get("tie_frac") is not None]
    for name, m in report["models"].items():
        lines.append(f"| {name} | {_pct(m['parsed']['acc_no_ties'])} | {_pct(m['expected']['acc_no_ties'])} | "
                     f"{_pct(m['expected'].get('acc_with_ties'))} | {_pct(m['parse_rate'])} | "
                     f"{_pct(m.get('principle_agreement'))} |")
    if notes:
        lines += [""] + notes
    kinds = sorted({k for m in report["models"].values() for k in m["expected"].get("per_kind", {})}, key=str)
    if kinds:
        names = list(report["models"])
        lines += ["", "Accuracy (expected readout) per pair kind:", "",
                  "| pair kind | n | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for kind in kinds:
            cells = [report["models"][n]["expected"].get("per_kind", {}).get(kind) for n in names]
            n = next((c["n"] for c in cells if c), 0)
            lines.append(f"| {kind} | {n} | " + " | ".join(_pct(c["mean"]) if c else "–" for c in cells) + " |")
    if report.get("differences"):
        lines += ["", "Paired bootstrap differences (95% CI):", ""]
        for key, d in report["differences"].items():
            lines.append(f"- {key}: {100 * d['diff']:+.1f} [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]")
    return "\n".join(lines) + "\n"
