"""The RRM's GPU path, checked and timed against the CPU in the same run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/gpu_check.py [--pairs 600] [--seconds 8] [--json out.json]

Builds a small world lake (`run_demo(train=False)`) in a temp dir, then for each device (``cpu``
with one thread — the baseline — and ``cuda`` when there is one):
  parity      the same three SFT steps on the same batches from the same weights: the CUDA losses
              must equal the CPU ones (tolerance 1e-3) — the training step is right on the GPU;
  sft_step    SFT optimizer steps per second (batch --batch) for the tiny RRM (params.yaml's
              shape), each run for --seconds after two warm-up steps, the ratio cuda / cpu printed;
              on CUDA also a mid-size RRM (text 512 × 8 layers, vision 256 × 4; 38 M parameters,
              ~40 s a step on one CPU thread, so no CPU baseline in the run);
  scoring     whole judgements generated per second (`score_pairs` on val pairs, greedy);
  gcpo        one GCPO step (sampling N traces per side + the update) from a tiny SFT model.
Exits non-zero when a check fails. Without CUDA it measures the CPU alone (no ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch

from editr1.config import config_from_dict, load_params
from editr1.demo import run_demo
from editr1.evaluation.rrm_eval import score_pairs
from editr1.training.gcpo import GCPOConfig, run_gcpo
from editr1.training.sft import SFTConfig, SFTTrainer, _base_model

ROOT = Path(__file__).resolve().parents[1]
MID = {"tiny_text_hidden": 512, "tiny_text_layers": 8, "tiny_text_heads": 8, "tiny_text_kv_heads": 4,
       "tiny_text_intermediate": 2048, "tiny_vision_hidden": 256, "tiny_vision_depth": 4, "tiny_vision_heads": 4,
       "tiny_vision_intermediate": 1024}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def sft_config(device: str, batch: int, **overrides) -> SFTConfig:
    section = dict(load_params(ROOT / "params.yaml")["sft"])
    section.update(workers=1, threads=1, device=device, batch_size=batch, eval_pairs=0, eval_every=0,
                   checkpoint_every=0, log_every=0, max_seconds=0, max_steps=10 ** 6, warmup_steps=2)
    section.update(overrides)
    return config_from_dict(SFTConfig, section, "sft")


def trainer(storage: Path, out: Path, cfg: SFTConfig) -> SFTTrainer:
    torch.manual_seed(0)
    t = SFTTrainer(cfg, storage, storage / "rrm/trajectories.parquet", storage / "rrm/principles.parquet", out)
    t.setup(resume=False)
    return t


def parity(storage: Path, work: Path) -> dict:
    cpu = trainer(storage, work / "parity-cpu", sft_config("cpu", 16))
    gpu = trainer(storage, work / "parity-cuda", sft_config("cuda", 16))
    batches = [cpu.next_batches() for _ in range(3)]
    cpu_losses = [cpu.train_step(b) for b in batches]
    gpu_losses = [gpu.train_step(b) for b in batches]
    diff = max(abs(a - b) for a, b in zip(cpu_losses, gpu_losses))
    return {"cpu_losses": cpu_losses, "cuda_losses": gpu_losses, "max_abs_diff": diff, "ok": diff < 1e-3}


def steps_per_second(storage: Path, work: Path, device: str, batch: int, seconds: float, **spec) -> dict:
    t = trainer(storage, work / f"speed-{device}-{len(spec)}", sft_config(device, batch, **spec))
    for _ in range(2):
        t.train_step(t.next_batches())
    sync(device)
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        loss = t.train_step(t.next_batches())
        steps += 1
    sync(device)
    elapsed = time.perf_counter() - started
    params = sum(p.numel() for p in t.model.parameters())
    return {"steps_per_s": steps / elapsed, "examples_per_s": steps * batch / elapsed, "steps": steps,
            "params_m": params / 1e6, "last_loss": loss}


def scoring_speed(storage: Path, work: Path, device: str, pairs: int) -> dict:
    t = trainer(storage, work / f"score-{device}", sft_config(device, 16, eval_pairs=pairs))
    for _ in range(20):  # a few steps so the judgements have some structure
        t.train_step(t.next_batches())
    t.model.eval()
    started = time.perf_counter()
    scores = score_pairs(_base_model(t.model), t.processor, t.val_pairs, t.images, t.checklists,
                         batch_size=32, max_new_tokens=t.cfg.max_new_tokens)
    sync(device)
    elapsed = time.perf_counter() - started
    return {"judgements_per_s": 2 * len(t.val_pairs) / elapsed, "pairs": len(t.val_pairs), "seconds": elapsed,
            "scored": len(scores)}


def gcpo_speed(storage: Path, work: Path, device: str, sft_model: Path, steps: int) -> dict:
    section = dict(load_params(ROOT / "params.yaml")["gcpo"])
    section.update(device=device, threads=1, max_steps=steps, max_seconds=0, eval_pairs=0, checkpoint_every=0,
                   max_new_tokens=160)
    cfg = config_from_dict(GCPOConfig, section, "gcpo")
    started = time.perf_counter()
    metrics = run_gcpo(cfg, storage, sft_model, storage / "rrm/trajectories.parquet",
                       storage / "rrm/principles.parquet", work / f"gcpo-{device}", resume=False)
    elapsed = time.perf_counter() - started
    return {"seconds_per_step": elapsed / steps, "steps": steps,
            **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=600)
    parser.add_argument("--seconds", type=float, default=8.0, help="Timed seconds per SFT throughput cell.")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--gcpo-steps", type=int, default=3)
    parser.add_argument("--json", type=Path, help="Write the results here (after every section).")
    args = parser.parse_args()
    torch.set_num_threads(1)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results: dict = {"torch": torch.__version__, "devices": devices,
                     "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    failed: list[str] = []
    begun = time.perf_counter()

    def section(name: str, fn, *a, **kw) -> None:
        try:
            results[name] = fn(*a, **kw)
            if isinstance(results[name], dict) and results[name].get("ok") is False:
                failed.append(name)
        except Exception as exc:  # one broken section must not hide the others' numbers
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            failed.append(name)
        print(f"{name} ({time.perf_counter() - begun:.0f} s in): {json.dumps(results[name], default=str)}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        storage = work / "lake"
        started = time.perf_counter()
        run_demo(storage, pairs=args.pairs, params_path=ROOT / "params.yaml", train=False)
        results["lake_seconds"] = round(time.perf_counter() - started, 2)
        if "cuda" in devices:
            section("parity", parity, storage, work)
        for device in devices:
            section(f"sft_step_tiny_{device}", steps_per_second, storage, work, device, args.batch, args.seconds)
            if device != "cpu":
                section(f"sft_step_mid_{device}", steps_per_second, storage, work, device, args.batch, args.seconds,
                        **MID)
            section(f"scoring_{device}", scoring_speed, storage, work, device, 32)
        # A tiny SFT model to start GCPO from (a few hundred steps: it writes parseable judgements).
        t = trainer(storage, work / "sft-base", sft_config(devices[-1], 32))
        for _ in range(150):
            t.train_step(t.next_batches())
        t.finish()
        for device in devices:
            section(f"gcpo_step_{device}", gcpo_speed, storage, work, device, work / "sft-base/model", args.gcpo_steps)
    if "cuda" in devices:
        cpu, gpu = results.get("sft_step_tiny_cpu", {}), results.get("sft_step_tiny_cuda", {})
        if "steps_per_s" in cpu and "steps_per_s" in gpu:
            results["sft_step_tiny_ratio"] = gpu["steps_per_s"] / cpu["steps_per_s"]
            print(f"sft step (tiny): cuda {gpu['steps_per_s']:.2f} steps/s vs cpu {cpu['steps_per_s']:.2f}: "
                  f"{results['sft_step_tiny_ratio']:.1f}x")
        cpu, gpu = results.get("scoring_cpu", {}), results.get("scoring_cuda", {})
        if "judgements_per_s" in cpu and "judgements_per_s" in gpu:
            print(f"scoring: cuda {gpu['judgements_per_s']:.1f} judgements/s vs cpu {cpu['judgements_per_s']:.1f}: "
                  f"{gpu['judgements_per_s'] / cpu['judgements_per_s']:.1f}x")
        cpu, gpu = results.get("gcpo_step_cpu", {}), results.get("gcpo_step_cuda", {})
        if "seconds_per_step" in cpu and "seconds_per_step" in gpu:
            print(f"gcpo step: cuda {gpu['seconds_per_step']:.2f} s vs cpu {cpu['seconds_per_step']:.2f} s: "
                  f"{cpu['seconds_per_step'] / gpu['seconds_per_step']:.1f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
