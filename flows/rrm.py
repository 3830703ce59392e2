"""The `sft`, `gcpo` and `evaluate` flows: SFT on the cold-start trajectories, then GCPO and its
same-compute control (SFT continued) concurrently, then held-out evaluation, version tagging and
promotion of the GCPO model in the MLflow registry.

    python -m flows.rrm --storage storage --out storage/runs
"""

from __future__ import annotations

import argparse
import json

from prefect import flow

from tasks.rrm import control_task, evaluate_task, gcpo_task, sft_task


@flow(name="sft")
def sft(storage: str = "storage", params: str = "params.yaml", out: str = "storage/runs/sft") -> dict:
    return sft_task(storage, params, out)


@flow(name="gcpo")
def gcpo(storage: str = "storage", params: str = "params.yaml", sft_model: str = "storage/runs/sft/model",
         out: str = "storage/runs") -> dict:
    control = control_task.submit(storage, params, sft_model, f"{out}/control")
    trained = gcpo_task(storage, params, sft_model, f"{out}/gcpo")
    return {"gcpo": trained, "control": control.result()}


@flow(name="rrm")
def rrm(storage: str = "storage", params: str = "params.yaml", out: str = "storage/runs") -> dict:
    base = sft(storage, params, f"{out}/sft")
    rl = gcpo(storage, params, base["model"], out)
    models = {"sft": base, "control": rl["control"], "gcpo": rl["gcpo"]}
    return {**models, "evaluate": evaluate_task(storage, params, models, f"{out}/eval")}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--storage", default="storage")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="storage/runs")
    args = parser.parse_args()
    print(json.dumps(rrm(args.storage, args.params, args.out), indent=2, default=str))
