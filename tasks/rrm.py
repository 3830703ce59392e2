"""Tasks of the `sft`, `gcpo` and `evaluate` stages: train, log to MLflow (params, per-step metrics,
lineage), register the model as `edit-rrm`, tag versions with their held-out accuracy, promote."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import mlflow
from prefect import task

from editr1.config import CurateConfig, EvaluateConfig, TeacherConfig, WorldConfig, config_to_dict, load_config
from editr1.evaluation.report import run_rrm_eval
from editr1.lake.objects import open_object_store
from editr1.teachers.factory import build_teacher
from editr1.training.gcpo import GCPOConfig, run_gcpo
from editr1.training.rrm_pipeline import control_config
from editr1.training.sft import SFTConfig, run_sft
from editr1ops.lineage import lineage_tags
from editr1ops.registry import ACCURACY_TAG, MODEL_NAME, log_rrm, promote
from editr1ops.tracking import log_metrics, stage_run


def _paths(storage: str) -> tuple[Path, Path]:
    return Path(storage) / "rrm" / "trajectories.parquet", Path(storage) / "rrm" / "principles.parquet"


def _log_history(history: list[dict]) -> None:
    for i, row in enumerate(history):
        step = int(row.get("step", i))
        mlflow.log_metrics({k: float(v) for k, v in row.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}, step=step)


def _train_and_register(stage: str, storage: str, cfg, metrics: dict, out: Path) -> dict:
    trajectories, _ = _paths(storage)
    with stage_run(stage, storage, config_to_dict(cfg), tags=lineage_tags(Path(storage), trajectories),
                   run_name=out.name) as run:
        _log_history(metrics.get("history") or [])
        log_metrics({k: v for k, v in metrics.items() if k not in ("history", "evaluations")})
        registered = log_rrm(out / "model", {"stage": stage})
    return {"model": str(out / "model"), "run_id": run.info.run_id, **registered}


@task(name="sft")
def sft_task(storage: str, params: str, out: str) -> dict:
    cfg = load_config(SFTConfig, "sft", params)
    trajectories, principles = _paths(storage)
    metrics = run_sft(cfg, Path(storage), trajectories, principles, Path(out))
    return _train_and_register("sft", storage, cfg, metrics, Path(out))


@task(name="gcpo")
def gcpo_task(storage: str, params: str, sft_model: str, out: str) -> dict:
    cfg = load_config(GCPOConfig, "gcpo", params)
    trajectories, principles = _paths(storage)
    metrics = run_gcpo(cfg, Path(storage), Path(sft_model), trajectories, principles, Path(out))
    return _train_and_register("gcpo", storage, cfg, metrics, Path(out))


@task(name="sft-control")
def control_task(storage: str, params: str, sft_model: str, out: str) -> dict:
    gcpo_cfg = load_config(GCPOConfig, "gcpo", params)
    cfg = control_config(load_config(SFTConfig, "sft", params), gcpo_cfg, gcpo_cfg.max_seconds)
    trajectories, principles = _paths(storage)
    metrics = run_sft(cfg, Path(storage), trajectories, principles, Path(out), init=Path(sft_model))
    with stage_run("gcpo", storage, {"control": dataclasses.asdict(cfg)}, run_name="control",
                   tags={"control_of": "gcpo", **lineage_tags(Path(storage), trajectories)}):
        _log_history(metrics.get("history") or [])
    return {"model": str(Path(out) / "model")}


@task(name="evaluate")
def evaluate_task(storage: str, params: str, models: dict[str, dict], out: str, margin: float = 0.01) -> dict:
    """Evaluates every model, tags registered versions with their test accuracy, promotes GCPO's."""
    curate_cfg = load_config(CurateConfig, "curate", params)
    store = open_object_store(curate_cfg.object_store, Path(storage), curate_cfg.s3_endpoint_url or None)
    teacher = build_teacher(load_config(TeacherConfig, "teacher", params), Path(storage),
                            load_config(WorldConfig, "world", params))
    cfg = load_config(EvaluateConfig, "evaluate", params)
    report = run_rrm_eval(cfg, Path(storage), {k: Path(v["model"]) for k, v in models.items()},
                          _paths(storage)[1], store, Path(out), teacher)
    client = mlflow.MlflowClient()
    with stage_run("evaluate", storage, config_to_dict(cfg), run_name="rrm"):
        for name, m in report["models"].items():
            log_metrics({f"{name}.{r}.acc_no_ties": m[r]["acc_no_ties"] for r in ("parsed", "expected")})
            if "version" in models[name]:
                client.set_model_version_tag(MODEL_NAME, str(models[name]["version"]), ACCURACY_TAG,
                                             str(m["expected"]["acc_no_ties"]))
        mlflow.log_artifact(str(Path(out) / "rrm_eval.md"))
    decision = promote(models["gcpo"]["version"], margin) if "version" in models.get("gcpo", {}) else None
    return {"report": str(Path(out) / "rrm_eval.json"), "promotion": decision.to_dict() if decision else None}
