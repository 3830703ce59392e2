"""The bench scripts the issues name still run and print their ratio (no timing is asserted: the
machines are noisy; bench/ measures, tests only check that it can)."""

import os
import re
import subprocess
import sys

from tests.conftest import ROOT


def run_bench(script: str, *args: str) -> str:
    """Runs bench/<script> with ``args`` (offline, one thread); its stdout, after checking it exited 0."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_train_step_bench_prints_its_ratio():
    # beta > 0 (the default) needs the frozen reference's log-probs: the bench broke once without them
    out = run_bench("train_step.py", "--pairs", "1", "--n-samples", "2", "--max-new-tokens", "12", "--repeats", "1")
    assert re.search(r"ratio gcpo / bare: \d+\.\d\d", out), out


def test_eval_workers_bench_prints_its_ratio_and_equal_scores():
    out = run_bench("eval_workers.py", "--models", "2", "--pairs", "2", "--max-new-tokens", "4", "--world-pairs", "40")
    assert re.search(r"ratio \d+\.\d\d \(ideal 2\.0\); same scores: True", out), out


def test_sft_encode_bench_prints_its_ratio_and_equal_batches():
    out = run_bench("sft_encode.py", "--batches", "2", "--batch", "4", "--world-pairs", "40")
    assert re.search(r"ratio \d+\.\d\d; same batches: True", out), out


def test_sft_cache_bench_prints_its_ratio_and_the_same_loss():
    out = run_bench("sft_cache.py", "--steps", "2", "--batch", "4", "--world-pairs", "40")
    assert re.search(r"ratio \d+\.\d\d; encoding all \d+ examples once: .* same loss: True", out), out


def test_sft_prefix_bench_prints_its_ratio_and_the_same_gradients():
    out = run_bench("sft_prefix.py", "--steps", "2", "--batch", "4", "--world-pairs", "40")
    assert re.search(r"once [\d.]+ s \(ratio \d+\.\d\d\), and with compiled layers [\d.]+ s \(ratio \d+\.\d\d; "
                     r".*; shared tokens \d+% .* same: True", out), out


def test_sft_loss_bench_prints_its_ratio_and_the_same_gradients():
    out = run_bench("sft_loss.py", "--steps", "2", "--batch", "4", "--world-pairs", "40")
    assert re.search(r"ratio \d+\.\d\d; first-step loss .* same: True; logits not held whole: \d+ targets", out), out
