"""The orchestration pattern: the Prefect flow with MLflow tracking, and `dvc repro` in a
temporary git repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def test_curate_flow_logs_to_mlflow(prefect_harness, tmp_path, monkeypatch):
    import mlflow

    from editr1.world import WorldConfig, write_batch
    from flows.curate import curate

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    storage = tmp_path / "storage"
    write_batch(storage / "incoming" / "w1", 25, 3, WorldConfig())
    summaries = curate(str(storage / "incoming"), str(storage), str(ROOT / "params.yaml"))
    assert [s["added"] for s in summaries] == [25]

    mlflow.set_tracking_uri(f"sqlite:///{storage / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name("curate")
    assert exp is not None and exp.artifact_location.startswith("file://")
    runs = mlflow.search_runs([exp.experiment_id], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.metrics["added"] == 25
    assert run.data.tags["data_hash"] == summaries[0]["fingerprint"]
    assert run.data.params["split_ratios.train"] == "0.8"


def test_coldstart_flows_log_to_mlflow(prefect_harness, tmp_path, monkeypatch):
    import mlflow

    from editr1.world import WorldConfig, write_batch
    from flows.coldstart import coldstart
    from flows.curate import curate

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    storage = tmp_path / "storage"
    write_batch(storage / "incoming" / "w1", 40, 4, WorldConfig())
    curate(str(storage / "incoming"), str(storage), str(ROOT / "params.yaml"))
    result = coldstart(str(storage), str(ROOT / "params.yaml"))
    assert result["accepted"] > 0 and Path(result["trajectories"]).exists()

    mlflow.set_tracking_uri(f"sqlite:///{storage / 'mlflow.db'}")
    for stage, metric in (("principles", "contexts"), ("coldstart", "acceptance_rate")):
        exp = mlflow.get_experiment_by_name(stage)
        (run,) = mlflow.search_runs([exp.experiment_id], output_format="list")
        assert metric in run.data.metrics, stage
        assert run.data.tags["teacher"] == "oracle" and run.data.tags["data_hash"]
    (run,) = mlflow.search_runs([mlflow.get_experiment_by_name("coldstart").experiment_id], output_format="list")
    assert run.data.metrics["usage.calls"] > 0 and "usage.cost_usd" in run.data.metrics


def test_dvc_repro_builds_the_lake(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["demo"]["pairs"] = 150  # enough contexts for val and test pairs (the rrm stage evaluates)
    # The rrm stage with tiny budgets: SFT (two workers) and GCPO for a few steps, a short evaluation.
    params["sft"].update(max_seconds=0.0, max_steps=3, batch_size=4, caption_batch_size=4, eval_pairs=2,
                         eval_loss_examples=4, max_new_tokens=8, checkpoint_every=0, vision_pretrain_steps=3,
                         vision_pretrain_min_acc=0.0, vision_pretrain_batch=8, caption_warmup_steps=1)
    params["gcpo"].update(max_seconds=0.0, max_steps=1, pairs_per_step=2, n_samples=2, max_new_tokens=8,
                          eval_pairs=0, checkpoint_every=0)
    params["evaluate"].update(max_pairs=4, max_new_tokens=8, bootstrap=20)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}

    def sh(*cmd: str) -> str:
        out = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    sh("git", "init", "-q")
    sh(str(BIN / "dvc"), "init", "-q")
    sh(str(BIN / "dvc"), "repro")
    metrics = json.loads((repo / "storage" / "metrics" / "curate.json").read_text())
    assert [m["added"] for m in metrics.values()] == [150]
    assert json.loads((repo / "storage" / "metrics" / "coldstart.json").read_text())["accepted"] > 0
    rrm = json.loads((repo / "storage" / "metrics" / "rrm.json").read_text())
    assert rrm["sft"]["parse_rate"] is not None and "control_test_acc_no_ties" in rrm["gcpo"]
    assert (repo / "storage" / "runs" / "rrm" / "gcpo" / "model" / "config.json").exists()
    assert (repo / "dvc.lock").exists()
    again = sh(str(BIN / "dvc"), "repro")
    assert "didn't change" in again or "up to date" in again.lower()
