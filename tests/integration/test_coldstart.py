"""`principles` → `coldstart` on a curated world batch with the oracle teacher."""

from __future__ import annotations

from pathlib import Path

import pytest

from editr1.coldstart import load_principles, load_trajectories, run_coldstart, run_principles
from editr1.config import ColdstartConfig, CurateConfig, PrinciplesConfig
from editr1.curation import add_batch
from editr1.lake.objects import open_object_store
from editr1.rrm.parser import parse_output
from editr1.rrm.principles import validate_principles
from editr1.teachers.factory import build_teacher
from editr1.teachers.params import TeacherConfig
from editr1.world import WorldConfig, write_batch


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> Path:
    storage = tmp_path_factory.mktemp("lake")
    write_batch(storage / "incoming" / "w", 80, 5, WorldConfig())
    add_batch(storage / "incoming" / "w", storage, CurateConfig())
    return storage


def run_stages(storage: Path, teacher_cfg: TeacherConfig, cold_cfg: ColdstartConfig) -> tuple[dict, dict]:
    teacher = build_teacher(teacher_cfg, storage, WorldConfig())
    store = open_object_store("", storage)
    p = run_principles(PrinciplesConfig(), storage, teacher, store, storage / "rrm" / "principles.parquet")
    c = run_coldstart(cold_cfg, storage, teacher, store, storage / "rrm" / "principles.parquet",
                      storage / "rrm" / "trajectories.parquet")
    return p, c


def test_every_trajectory_parses_and_checklists_are_valid(curated):
    p, c = run_stages(curated, TeacherConfig(), ColdstartConfig())
    assert p["contexts"] > 0 and p["new"] == p["contexts"]
    for checklist in load_principles(curated / "rrm" / "principles.parquet").values():
        validate_principles([x.to_dict() for x in checklist])
    rows = load_trajectories(curated / "rrm" / "trajectories.parquet", accepted_only=False)
    assert len(rows) == c["items"] > 0
    assert {r["split"] for r in rows} <= {"train", "val"}
    accepted = [r for r in rows if r["accepted"]]
    assert 0 < len(accepted) == c["accepted"]
    for row in rows:
        judgement = parse_output(row["text"])
        assert judgement.parse_ok, row["text"]
        assert len(row["gold"]) == len(row["principles"])
    for row in accepted:
        assert row["agreement"] >= ColdstartConfig().min_agreement
    # the principles stage is incremental: a rerun asks the teacher for nothing new
    p2, _ = run_stages(curated, TeacherConfig(), ColdstartConfig(max_items=5))
    assert p2["new"] == 0 and p2["reused"] == p["contexts"]


def test_perfect_teacher_is_accepted_everywhere(curated):
    _, c = run_stages(curated, TeacherConfig(perfect=True), ColdstartConfig(k=2))
    assert c["acceptance_rate"] == 1.0 and c["mean_agreement"] == 1.0


def test_dropping_contradictions_rejects_pairs(curated):
    _, keep = run_stages(curated, TeacherConfig(), ColdstartConfig(k=2))
    _, drop = run_stages(curated, TeacherConfig(), ColdstartConfig(k=2, drop_contradicting=True))
    assert drop["accepted"] <= keep["accepted"]
    assert drop["rejected_by_reason"].get("contradicts_human", 0) == keep["accepted"] - drop["accepted"]
