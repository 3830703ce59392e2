"""`editr1 demo` through the console script, training included (tiny budgets through a profile):
the summary gains `sft` and `gcpo` sections; the run's merged params are kept in the lake; a bad
profile is a one-line error that touches nothing; `editr1 score` on a demo image prints a judgement.

The learning itself is measured by the demo's default profile (README) and tests/integration/test_sft.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from editr1.lake import curated_pairs

ROOT = Path(__file__).resolve().parents[2]
EDITR1 = str(Path(sys.executable).parent / "editr1")

SMOKE = {
    "demo": {"pairs": 150},
    "sft": {"max_steps": 6, "max_seconds": 0.0, "caption_batch_size": 4, "batch_size": 8, "warmup_steps": 2,
            "vision_pretrain_steps": 3, "vision_pretrain_min_acc": 0.0, "vision_pretrain_batch": 8,
            "caption_warmup_steps": 2, "eval_pairs": 4,
            "eval_loss_examples": 8, "max_new_tokens": 24, "checkpoint_every": 0, "log_every": 0},
    "gcpo": {"max_steps": 2, "max_seconds": 0.0, "pairs_per_step": 2, "n_samples": 2, "max_new_tokens": 24,
             "eval_pairs": 4, "checkpoint_every": 0},
    "evaluate": {"max_new_tokens": 24, "max_pairs": 12, "bootstrap": 20},
}


def editr1(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([EDITR1, *args], capture_output=True, text=True, timeout=900)
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def params(tmp_path_factory) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["profiles"]["smoke"] = SMOKE
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory, params) -> tuple[Path, dict]:
    storage = tmp_path_factory.mktemp("demo") / "lake"
    summary_path = storage.parent / "summary.json"
    editr1("demo", "--storage", str(storage), "--params", str(params), "--profile", "smoke",
           "--json", str(summary_path))
    return storage, json.loads(summary_path.read_text())


def test_the_summary_has_sft_and_gcpo_sections(demo):
    storage, summary = demo
    assert summary["profile"] == "smoke" and summary["curate"]["added"] == 150
    for section in ("sft", "gcpo"):
        for key in ("test_acc_no_ties", "parse_rate"):
            value = summary[section][key]
            assert value is None or 0.0 <= value <= 1.0, (section, key, value)
    for key in ("control_test_acc_no_ties", "zero_advantage_frac"):
        assert key in summary["gcpo"]
    # The run read the merged params, and they are kept in the lake.
    merged = yaml.safe_load((storage / "params.yaml").read_text())
    assert "profiles" not in merged and merged["sft"]["max_steps"] == 6 and merged["gcpo"]["max_steps"] == 2
    for name in ("sft", "gcpo", "control"):
        assert (storage / "runs" / "rrm" / name / "model" / "model.safetensors").exists(), name
    assert (storage / "runs" / "rrm" / "eval" / "rrm_eval.json").exists()


def test_score_prints_a_judgement_for_a_demo_image(demo):
    storage, _ = demo
    pair = curated_pairs(storage, "test").to_pylist()[0]
    source, edited = (storage / "objects" / sha[:2] / sha[2:] for sha in (pair["source_sha"], pair["chosen_sha"]))
    out = editr1("score", "--model", str(storage / "runs" / "rrm" / "sft" / "model"), "--source", str(source),
                 "--edited", str(edited), "--instruction", pair["instruction"], "--storage", str(storage), "--json")
    judgement = json.loads(out.stdout)
    assert {"score", "principles", "parse_ok"} <= set(judgement)


def test_an_unknown_profile_fails_in_one_line_and_keeps_the_lake(demo, params):
    storage, _ = demo
    before = sorted(p.relative_to(storage) for p in storage.rglob("*"))
    out = editr1("demo", "--storage", str(storage), "--params", str(params), "--profile", "nosuch", check=False)
    assert out.returncode != 0
    assert "unknown profile 'nosuch'" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert sorted(p.relative_to(storage) for p in storage.rglob("*")) == before
