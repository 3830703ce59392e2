"""Training the RRM end to end: `sft`, then `gcpo` and its same-compute control side by side, then
`evaluate` on held-out human pairs.

    run_rrm_training(storage, params_path, out) -> {"sft": …, "gcpo": …, "control": …, "eval": …}

From a shell (the dvc `rrm` stage)::

    python -m editr1.training.rrm_pipeline --storage storage --out storage/runs/rrm --json storage/metrics/rrm.json

The control is the SFT model trained on with its own SFT data for the same wall-clock budget as
GCPO (`gcpo.max_seconds`); it runs in a second process so both use one core each (FINDINGS.md:
one thread per process is fastest here). Every RL gain is reported against it, not only against
the SFT start.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from editr1.config import CurateConfig, EvaluateConfig, TeacherConfig, WorldConfig, load_config
from editr1.evaluation.report import run_rrm_eval
from editr1.lake.objects import open_object_store
from editr1.teachers.factory import build_teacher
from editr1.training.gcpo import GCPOConfig, run_gcpo
from editr1.training.sft import SFTConfig, run_sft


def control_config(sft: SFTConfig, gcpo: GCPOConfig, seconds: float, steps: int = 0) -> SFTConfig:
    """SFT continued from the SFT model for the same compute as GCPO: a wall-clock budget (or a
    step count), no intermediate evaluation but GCPO's model selection and tail averaging (the same
    points, start, val pairs and tail: `editr1.training.selection`), caption warm-up skipped (the
    model is already trained: caption-only steps would spend the control's budget off its task), one
    process (GCPO holds the other core). The optimizer is SFT's (``sft.optimizer``), fresh. The lr
    warm-up stays: a fresh Adam's first step moves every weight by about the peak lr — without a
    warm-up that step cost the full profile's control 1.3 points under its SFT start (README: the
    control)."""
    return replace(sft, max_seconds=seconds, max_steps=steps, eval_every=0, caption_warmup_steps=0, workers=1,
                   select_points=gcpo.select_points, select_start=gcpo.select_start, eval_pairs=gcpo.eval_pairs,
                   eval_batch_size=gcpo.eval_batch_size, average_tail=gcpo.average_tail)


def _control(cfg: SFTConfig, storage: Path, trajectories: Path, principles: Path, out: Path, init: Path) -> dict:
    return run_sft(cfg, storage, trajectories, principles, out, init=init)


def run_rrm_training(storage: Path, params_path: Path, out: Path) -> dict[str, Any]:
    """See the module docstring. `out` gets sft/, gcpo/, control/ (each with model/ and metrics.json)
    and eval/ (rrm_eval.json, rrm_eval.md)."""
    storage, out = Path(storage), Path(out)
    sft_cfg = load_config(SFTConfig, "sft", params_path)
    gcpo_cfg = load_config(GCPOConfig, "gcpo", params_path)
    trajectories = storage / "rrm" / "trajectories.parquet"
    principles = storage / "rrm" / "principles.parquet"
    result: dict[str, Any] = {}

    started = time.perf_counter()
    result["sft"] = run_sft(sft_cfg, storage, trajectories, principles, out / "sft")
    result["sft_seconds"] = round(time.perf_counter() - started, 1)
    sft_model = out / "sft" / "model"

    started = time.perf_counter()
    if gcpo_cfg.max_seconds > 0:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            control = pool.submit(_control, control_config(sft_cfg, gcpo_cfg, gcpo_cfg.max_seconds), storage,
                                  trajectories, principles, out / "control", sft_model)
            result["gcpo"] = run_gcpo(gcpo_cfg, storage, sft_model, trajectories, principles, out / "gcpo")
            result["control"] = control.result()
    else:  # a step-bounded GCPO run: the control gets the wall-clock time GCPO took
        result["gcpo"] = run_gcpo(gcpo_cfg, storage, sft_model, trajectories, principles, out / "gcpo")
        seconds = time.perf_counter() - started
        result["control"] = _control(control_config(sft_cfg, gcpo_cfg, seconds), storage, trajectories, principles,
                                     out / "control", sft_model)
    result["rl_seconds"] = round(time.perf_counter() - started, 1)

    curate_cfg = load_config(CurateConfig, "curate", params_path)
    store = open_object_store(curate_cfg.object_store, storage, curate_cfg.s3_endpoint_url or None)
    teacher = build_teacher(load_config(TeacherConfig, "teacher", params_path), storage,
                            load_config(WorldConfig, "world", params_path))
    models = {"sft": sft_model, "control": out / "control" / "model", "gcpo": out / "gcpo" / "model"}
    result["eval"] = run_rrm_eval(load_config(EvaluateConfig, "evaluate", params_path), storage, models, principles,
                                  store, out / "eval", teacher)
    return result


def demo_sections(result: dict[str, Any]) -> dict[str, Any]:
    """The `sft` and `gcpo` sections of the demo summary (accuracy without ties on test)."""
    models = result["eval"]["models"]

    def acc(name: str, readout: str) -> float | None:
        return models[name][readout]["acc_no_ties"]

    zero = result["gcpo"].get("zero_advantage_frac")  # the mean over GCPO's steps (run_gcpo's final metrics)
    # with policy_tokens score_exact: the share of traces whose exact score term had nothing to move
    quiet = {k: result["gcpo"][k] for k in ("zero_signal_frac",) if k in result["gcpo"]}
    # with model selection (gcpo.select_points): the step of each side's kept weights (0 = its start)
    quiet.update({k: result[side]["selected_step"] for k, side in (("selected_step", "gcpo"),
                                                                   ("control_selected_step", "control"))
                  if "selected_step" in result.get(side, {})})
    return {
        "sft": {"test_acc_no_ties": acc("sft", "expected"), "test_acc_no_ties_parsed": acc("sft", "parsed"),
                "parse_rate": models["sft"]["parse_rate"], "seconds": result["sft_seconds"]},
        "gcpo": {"test_acc_no_ties": acc("gcpo", "expected"), "test_acc_no_ties_parsed": acc("gcpo", "parsed"),
                 "parse_rate": models["gcpo"]["parse_rate"],
                 "control_test_acc_no_ties": acc("control", "expected"),
                 "control_test_acc_no_ties_parsed": acc("control", "parsed"),
                 "zero_advantage_frac": zero, **quiet, "seconds": result["rl_seconds"]},
    }


def main(argv: list[str] | None = None) -> None:
    """Command line: train and evaluate with params.yaml's sft, gcpo and evaluate sections; print
    (and with --json write) the summary sections."""
    parser = argparse.ArgumentParser(description="sft → gcpo ∥ control → evaluate on a lake.")
    parser.add_argument("--storage", type=Path, required=True, help="Lake root (with rrm/trajectories.parquet).")
    parser.add_argument("--out", type=Path, required=True, help="Run directory: sft/, gcpo/, control/, eval/.")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params.yaml.")
    parser.add_argument("--json", type=Path, help="Write the summary (accuracies, parse rates) here.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    summary = demo_sections(run_rrm_training(args.storage, args.params, args.out))
    text = json.dumps(summary, indent=2, sort_keys=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
