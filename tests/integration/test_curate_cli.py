"""The acceptance path through the real console script: world make → batch add twice; concurrent
adds from two processes; the demo summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from editr1.curation import list_batches
from editr1.lake import curated_pairs

EDITR1 = str(Path(sys.executable).parent / "editr1")


def run(*args: str, cwd: Path | None = None) -> str:
    out = subprocess.run([EDITR1, *args], capture_output=True, text=True, cwd=cwd, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_world_make_then_add_twice(tmp_path):
    batch, lake = tmp_path / "B", tmp_path / "lake"
    run("world", "make", "--out", str(batch), "--pairs", "300", "--seed", "7")
    first = json.loads(run("batch", "add", str(batch), "--json", "--storage", str(lake)))
    second = json.loads(run("batch", "add", str(batch), "--json", "--storage", str(lake)))
    assert first["added"] == 300 and first["quarantined"] == 0
    assert second["added"] == 0
    listed = json.loads(run("batch", "list", "--json", "--storage", str(lake)))
    assert [b["batch_id"] for b in listed] == [first["batch_id"]]
    shown = json.loads(run("batch", "show", first["batch_id"], "--json", "--storage", str(lake)))
    assert sum(shown["current"]["pairs_by_split"].values()) == 300
    # no context in two splits
    pairs = curated_pairs(lake).to_pylist()
    by_context: dict[str, set] = {}
    for p in pairs:
        by_context.setdefault(p["context_id"], set()).add(p["split"])
    assert all(len(s) == 1 for s in by_context.values())


def test_bad_batch_path_is_one_clear_line(tmp_path):
    out = subprocess.run([EDITR1, "batch", "add", str(tmp_path / "absent"), "--storage", str(tmp_path / "lake")],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "batch folder not found" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_two_processes_adding_at_once_both_land(tmp_path):
    lake = tmp_path / "lake"
    run("world", "make", "--out", str(tmp_path / "B1"), "--pairs", "120", "--seed", "1")
    run("world", "make", "--out", str(tmp_path / "B2"), "--pairs", "120", "--seed", "2")
    procs = [subprocess.Popen([EDITR1, "batch", "add", str(tmp_path / name), "--json", "--storage", str(lake)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("B1", "B2")]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        results.append(json.loads(stdout))
    assert len(list_batches(lake)) == 2
    assert len(curated_pairs(lake)) == sum(r["added"] for r in results) == 240


def test_demo_writes_summary(tmp_path):
    summary_path = tmp_path / "summary.json"
    run("demo", "--storage", str(tmp_path / "demo"), "--pairs", "40", "--no-train", "--json", str(summary_path))
    summary = json.loads(summary_path.read_text())
    assert summary["curate"]["added"] == 40 and summary["curate"]["quarantined"] == 0
    assert summary["total_seconds"] > 0
    # a second run starts from an empty demo lake, not from the first run's
    run("demo", "--storage", str(tmp_path / "demo"), "--pairs", "40", "--no-train", "--json", str(summary_path))
    assert json.loads(summary_path.read_text())["curate"]["added"] == 40
