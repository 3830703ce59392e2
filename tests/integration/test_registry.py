"""Registering RRMs in MLflow and promoting them: `champion` moves only for a real improvement,
and `models:/edit-rrm@champion` loads wherever a model URI is accepted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch

from editr1.models import load_rrm, save_rrm, tiny_rrm
from editr1ops.registry import ACCURACY_TAG, log_rrm, promote, resolve_model_uri
from editr1ops.tracking import stage_run, tracking_uri

EDITR1 = str(Path(sys.executable).parent / "editr1")


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    storage = tmp_path_factory.mktemp("reg")
    torch.manual_seed(0)
    model, processor = tiny_rrm(["<score>7</score> a tiny corpus of words"] * 20, storage / "tok")
    save_rrm(model, processor, storage / "model")
    versions = []
    for acc in (0.70, 0.69, 0.75):
        with stage_run("gcpo", storage, {"lr": 1e-4}):
            versions.append(log_rrm(storage / "model", {ACCURACY_TAG: acc})["version"])
    return storage, versions


def test_promotion_rules(registry):
    storage, (v1, v2, v3) = registry
    mlflow.set_tracking_uri(tracking_uri(storage))
    first = promote(v1, margin=0.01)
    assert first.champion and first.reason == "no champion yet"
    worse = promote(v2, margin=0.01)
    assert worse.candidate and not worse.champion and "does not beat" in worse.reason
    client = mlflow.MlflowClient()
    assert client.get_model_version_by_alias("edit-rrm", "champion").version in (v1, str(v1))
    assert client.get_model_version_by_alias("edit-rrm", "candidate").version in (v2, str(v2))
    # the CLI says why and leaves champion alone when the margin is not met
    out = subprocess.run([EDITR1, "rrm", "promote", str(v3), "--margin", "0.1", "--storage", str(storage)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["champion"] is False
    assert client.get_model_version_by_alias("edit-rrm", "champion").version in (v1, str(v1))
    better = promote(v3, margin=0.01)
    assert better.champion
    assert client.get_model_version_by_alias("edit-rrm", "champion").version in (v3, str(v3))


def test_champion_uri_loads(registry):
    storage, _ = registry
    path = resolve_model_uri("models:/edit-rrm@champion", storage)
    model, processor = load_rrm(path)
    original, _ = load_rrm(storage / "model")
    for (name, a), (_, b) in zip(model.state_dict().items(), original.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_missing_model_folder_is_named_as_such(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model folder at"):
        resolve_model_uri(str(tmp_path / "nope"))
    assert resolve_model_uri("Qwen/Qwen2.5-VL-3B-Instruct") == "Qwen/Qwen2.5-VL-3B-Instruct"  # a hub id passes
    assert resolve_model_uri(str(tmp_path)) == str(tmp_path)
