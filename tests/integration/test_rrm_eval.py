"""The `evaluate` stage's report: models and baselines on the same held-out pairs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from editr1.coldstart import run_principles
from editr1.coldstart.checklists import load_principles
from editr1.config import CurateConfig, EvaluateConfig, PrinciplesConfig
from editr1.curation import add_batch
from editr1.evaluation.report import run_rrm_eval, score_models
from editr1.lake.catalog import curated_pairs
from editr1.lake.objects import open_object_store
from editr1.models import save_rrm, tiny_rrm
from editr1.teachers.factory import build_teacher
from editr1.teachers.params import TeacherConfig
from editr1.world import WorldConfig, write_batch


def world_lake(storage: Path, pairs: int, seed: int):
    """A curated world lake with principles; (store, teacher)."""
    write_batch(storage / "incoming" / "w", pairs, seed, WorldConfig())
    add_batch(storage / "incoming" / "w", storage, CurateConfig())
    store = open_object_store("", storage)
    teacher = build_teacher(TeacherConfig(), storage, WorldConfig())
    run_principles(PrinciplesConfig(), storage, teacher, store, storage / "rrm" / "principles.parquet")
    return store, teacher


def test_report_has_models_baselines_kinds_and_cis(tmp_path):
    storage = tmp_path / "lake"
    store, teacher = world_lake(storage, 120, 11)
    torch.manual_seed(0)
    model, processor = tiny_rrm(["before after <score>5</score> yes no"] * 10, tmp_path / "tok")
    save_rrm(model, processor, tmp_path / "m")
    cfg = EvaluateConfig(max_new_tokens=12, max_pairs=10, bootstrap=50)
    report = run_rrm_eval(cfg, storage, {"a": tmp_path / "m", "b": tmp_path / "m"},
                          storage / "rrm" / "principles.parquet", store, tmp_path / "out", teacher)
    assert set(report["baselines"]) == {"random", "teacher (oracle)"}
    # the teacher judges with its own rubric: a real number, not a placeholder
    teacher_row = report["baselines"]["teacher (oracle)"]
    assert 0.0 <= teacher_row["acc_no_ties"] <= 1.0
    # ties are wrong by the strict rule and half right in the SFT-ceiling figure
    assert teacher_row["acc_ties_half"] == pytest.approx(teacher_row["acc_no_ties"] + teacher_row["tie_frac"] / 2)
    for name in ("a", "b"):
        m = report["models"][name]
        assert m["parse_rate"] == 0.0  # an untrained model writes no <score>
        assert m["expected"]["acc_no_ties"] == 0.0  # missing scores count as wrong (the paper's protocol)
        assert m["expected"]["per_kind"]
    assert report["differences"]["b - a (expected)"]["diff"] == 0.0
    saved = json.loads((tmp_path / "out" / "rrm_eval.json").read_text())
    assert saved["non_tie_pairs"] == report["non_tie_pairs"]
    markdown = (tmp_path / "out" / "rrm_eval.md").read_text()
    assert "| a |" in markdown and "breaks its ties at random" in markdown


def test_scoring_in_worker_processes_gives_the_scores_of_one_process(tmp_path):
    """`evaluate.workers` 2: each (model, split) job runs in a spawned process; the scored pairs are
    those of the same calls in this process, each model's own (two different models, so a job whose
    result went to the wrong model or split would show)."""
    storage = tmp_path / "lake"
    store, _ = world_lake(storage, 60, 5)
    models = {}
    torch.manual_seed(0)
    for i in range(2):
        model, processor = tiny_rrm(["before after red blue circle square <score>5</score> yes no"] * 10,
                                    tmp_path / f"tok{i}")
        with torch.no_grad():  # tiny_rrm's init is seeded: make the second model a different one
            for param in model.parameters():
                param.add_(i * 0.5 * torch.randn_like(param))
        save_rrm(model, processor, tmp_path / f"m{i}")
        models[f"m{i}"] = tmp_path / f"m{i}"
    checklists = load_principles(storage / "rrm" / "principles.parquet")
    test = [dict(r) for r in curated_pairs(storage, "test").to_pylist()[:6]]
    calib = [dict(r) for r in curated_pairs(storage, "val").to_pylist()[:4]]
    assert test and calib
    cfg = EvaluateConfig(max_new_tokens=8, n_samples=2, temperature=1.0)  # sampled, seeded: texts differ by model
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' setting: the same float reductions
    try:
        one = score_models(replace(cfg, workers=1), models, test, calib, store, checklists)
    finally:
        torch.set_num_threads(threads)
    two = score_models(replace(cfg, workers=2), models, test, calib, store, checklists)
    assert two == one
    assert [len(one[m][0]) for m in models] == [len(test)] * 2 and [len(one[m][1]) for m in models] == [len(calib)] * 2
    texts = {m: [p.chosen_text for p in one[m][0]] for m in models}
    assert texts["m0"] != texts["m1"]  # the two models write different things
    with pytest.raises(ValueError, match="workers"):
        EvaluateConfig(workers=0)
