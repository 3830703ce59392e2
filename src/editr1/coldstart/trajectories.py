"""The `coldstart` stage (DESIGN §5): teacher chain-of-thought trajectories for SFT.

    run_coldstart(cfg, storage, teacher, store, principles_path, out) -> summary dict

For each (context, edited image) of the curated pairs in `cfg.splits`: K candidate traces from
the teacher, gold 0/1 labels from the verifier, the trace with the best per-principle agreement
kept (ties: higher average score, then lower index). A trajectory is accepted when it parses and
agrees with gold on at least `cfg.min_agreement` of the principles; with
`cfg.drop_contradicting`, both trajectories of a human pair whose teacher scores order it the
other way are rejected too. Every row is written, accepted or not, with the reason.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa

from editr1 import schemas
from editr1.coldstart.checklists import load_principles
from editr1.coldstart.selection import contradicts, select_trace
from editr1.config import ColdstartConfig
from editr1.lake.catalog import connect_catalog
from editr1.lake.images import ImageLoader
from editr1.lake.objects import ObjectStore
from editr1.lake.tables import read_parquet, write_parquet_atomic
from editr1.rrm.items import Context, Quadruple
from editr1.rrm.parser import parse_output
from editr1.rrm.prompt import PROMPT_VERSION, prompt_hash
from editr1.teachers.base import Teacher


def _pairs(storage: Path, splits: tuple[str, ...]) -> list[dict[str, Any]]:
    con = connect_catalog(storage)
    try:
        return con.sql("SELECT pair_id, context_id, source_sha, chosen_sha, rejected_sha, instruction, category, "
                       "label, split FROM pairs WHERE list_contains($splits, split) ORDER BY pair_id",
                       params={"splits": list(splits)}).to_arrow_table().to_pylist()
    finally:
        con.close()


def load_trajectories(path: Path, accepted_only: bool = True, split: str | None = None) -> list[dict[str, Any]]:
    rows = read_parquet(path).to_pylist()
    return [r for r in rows if (r["accepted"] or not accepted_only) and (split is None or r["split"] == split)]


def run_coldstart(cfg: ColdstartConfig, storage: Path, teacher: Teacher, store: ObjectStore,
                  principles_path: Path, out: Path) -> dict[str, Any]:
    """Writes `out` (schemas.TRAJECTORIES) and returns the summary logged by the flow."""
    started = time.perf_counter()
    checklists = load_principles(principles_path)
    pairs = _pairs(storage, cfg.splits)
    items: dict[tuple[str, str], dict[str, Any]] = {}
    for pair in pairs:
        for sha in (pair["chosen_sha"], pair["rejected_sha"]):
            items.setdefault((pair["context_id"], sha), pair)
    keys = sorted(items)
    if cfg.max_items:
        keys = keys[: cfg.max_items]
    missing = {ctx for ctx, _ in keys if ctx not in checklists}
    if missing:
        raise ValueError(f"{len(missing)} contexts have no principles in {principles_path}; run the principles stage")

    images = ImageLoader(store)
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for start in range(0, len(keys), cfg.batch_size):
        chunk = keys[start:start + cfg.batch_size]
        quads = []
        for ctx_id, sha in chunk:
            pair = items[(ctx_id, sha)]
            context = Context(ctx_id, pair["instruction"], images(pair["source_sha"]), pair["source_sha"],
                              pair["category"])
            quads.append(Quadruple(context, images(sha), tuple(checklists[ctx_id]), sha))
        candidates = teacher.traces(quads, cfg.k, cfg.temperature)
        for key, quad, texts in zip(chunk, quads, candidates):
            rows[key] = _select(quad, texts, teacher.verify(quad), items[key], cfg, teacher.name)

    if cfg.drop_contradicting:
        for pair in pairs:
            if pair["label"] != "chosen":
                continue
            kc, kr = (pair["context_id"], pair["chosen_sha"]), (pair["context_id"], pair["rejected_sha"])
            if kc in rows and kr in rows and rows[kc]["accepted"] and rows[kr]["accepted"] \
                    and contradicts(rows[kc]["score"], rows[kr]["score"]):
                for k in (kc, kr):
                    rows[k].update(accepted=False, reject_reason="contradicts_human")

    table = pa.Table.from_pylist([rows[k] for k in keys], schema=schemas.TRAJECTORIES)
    write_parquet_atomic(table, out)
    accepted = [r for r in rows.values() if r["accepted"]]
    return {
        "items": len(rows), "accepted": len(accepted),
        "acceptance_rate": round(len(accepted) / len(rows), 4) if rows else 0.0,
        "mean_agreement": round(sum(r["agreement"] for r in rows.values()) / len(rows), 4) if rows else 0.0,
        "rejected_by_reason": dict(sorted(Counter(r["reject_reason"] for r in rows.values()
                                                  if not r["accepted"]).items())),
        "accepted_by_category": dict(sorted(Counter(r["category"] or "none" for r in accepted).items())),
        "accepted_by_split": dict(sorted(Counter(r["split"] for r in accepted).items())),
        "teacher": teacher.name, "usage": teacher.usage.to_dict(),
        "seconds": round(time.perf_counter() - started, 3),
    }


def _select(quad: Quadruple, texts: list[str], gold: list[int], pair: dict, cfg: ColdstartConfig,
            teacher: str) -> dict[str, Any]:
    judgements = [parse_output(t) for t in texts]
    choice = select_trace(judgements, gold)
    chosen = judgements[choice.index] if choice.index is not None else None
    if chosen is None:
        reason = "no_parseable_trace"
    elif choice.agreement < cfg.min_agreement:
        reason = "low_agreement"
    else:
        reason = None
    return {
        "context_id": quad.context.context_id, "source_sha": quad.context.source_sha, "edited_sha": quad.edited_sha,
        "instruction": quad.instruction, "category": pair["category"], "split": pair["split"],
        "principles": [p.to_dict() for p in quad.principles],
        "text": texts[choice.index] if chosen else (texts[0] if texts else ""),
        "score": chosen.score if chosen else None,
        "principle_scores": list(chosen.principle_scores) if chosen else [],
        "gold": list(gold), "agreement": choice.agreement, "candidates": len(texts),
        "selected_index": choice.index if choice.index is not None else -1,
        "accepted": reason is None, "reject_reason": reason, "teacher": teacher,
        "prompt_version": PROMPT_VERSION,
        "prompt_hash": prompt_hash(quad.instruction, quad.principles),
    }
