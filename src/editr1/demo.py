"""The embedded pipeline on one CPU, no downloads: the synthetic world's batch → curate →
principles → coldstart → sft → gcpo ∥ same-compute control → evaluate. `editr1 demo` and
`make demo` call `run_demo`.

A profile (``profiles.<name>`` in params.yaml, e.g. ``full``) overrides sections for one run; the
merged parameters are written to ``<storage>/params.yaml``, which every stage of the run reads, so
a demo lake always records what made it.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from editr1.coldstart import run_coldstart, run_principles
from editr1.config import (
    ColdstartConfig,
    CurateConfig,
    DemoConfig,
    PrinciplesConfig,
    TeacherConfig,
    apply_profile,
    load_config,
    load_params,
)
from editr1.curation.ingest import add_batch
from editr1.lake.objects import open_object_store
from editr1.teachers.factory import build_teacher
from editr1.world import WorldConfig, write_batch

DEMO_MARKER = ".editr1-demo"


def prepare_demo_storage(storage: Path) -> None:
    """Starts the demo from an empty lake. Only a folder the demo itself made is ever wiped."""
    if storage.exists() and any(storage.iterdir()):
        if not (storage / DEMO_MARKER).exists():
            raise FileExistsError(f"{storage} is not empty and was not made by the demo; "
                                  "pass an empty or new --storage folder")
        shutil.rmtree(storage)
    storage.mkdir(parents=True, exist_ok=True)
    (storage / DEMO_MARKER).write_text("made by `editr1 demo`; wiped at its next run\n")


def run_demo(storage: Path, seed: int | None = None, pairs: int | None = None,
             params_path: Path = Path("params.yaml"), profile: str = "", train: bool | None = None) -> dict[str, Any]:
    """Runs every embedded stage in order and returns the summary (also what `--json` writes).

    seed, pairs, train: None = the (profiled) ``demo`` section's. train=False stops after coldstart.
    """
    started = time.perf_counter()
    storage = Path(storage)
    params = apply_profile(load_params(params_path), profile)  # before wiping anything: a bad profile fails first
    prepare_demo_storage(storage)
    params_path = storage / "params.yaml"
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    demo_cfg = load_config(DemoConfig, "demo", params_path)
    seed = demo_cfg.seed if seed is None else seed
    pairs = demo_cfg.pairs if pairs is None else pairs
    train = demo_cfg.train if train is None else train
    world_cfg = load_config(WorldConfig, "world", params_path)
    curate_cfg = load_config(CurateConfig, "curate", params_path)
    summary: dict[str, Any] = {"storage": str(storage), "seed": seed, "profile": profile or "default"}

    t0 = time.perf_counter()
    batch_dir = storage / "incoming" / f"world-s{seed}"
    world = write_batch(batch_dir, pairs, seed, world_cfg)
    summary["world"] = {"pairs": world["pairs"], "rows": world["rows"], "seconds": round(time.perf_counter() - t0, 3)}

    added = add_batch(batch_dir, storage, curate_cfg)
    summary["curate"] = {"added": added.added, "votes": added.votes, "duplicates": added.duplicates,
                         "conflicts": added.conflicts, "quarantined": added.quarantined,
                         "splits": added.splits, "seconds": round(added.seconds, 3)}
    teacher_cfg = load_config(TeacherConfig, "teacher", params_path)
    teacher = build_teacher(teacher_cfg, storage, world_cfg)
    store = open_object_store(curate_cfg.object_store, storage, curate_cfg.s3_endpoint_url or None)
    principles_path = storage / "rrm" / "principles.parquet"
    checklists = run_principles(load_config(PrinciplesConfig, "principles", params_path), storage, teacher, store,
                                principles_path)
    summary["principles"] = {k: checklists[k] for k in ("contexts", "mean_principles", "seconds")}
    cold = run_coldstart(load_config(ColdstartConfig, "coldstart", params_path), storage, teacher, store,
                         principles_path, storage / "rrm" / "trajectories.parquet")
    summary["coldstart"] = {k: cold[k] for k in ("items", "accepted", "acceptance_rate", "mean_agreement",
                                                 "rejected_by_reason", "seconds")}
    if train:
        from editr1.training.rrm_pipeline import demo_sections, run_rrm_training

        result = run_rrm_training(storage, params_path, storage / "runs" / "rrm")
        summary.update(demo_sections(result))
    summary["total_seconds"] = round(time.perf_counter() - started, 3)
    return summary


def write_summary(summary: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
