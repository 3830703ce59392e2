"""Tasks of the `principles` and `coldstart` stages."""

from __future__ import annotations

import hashlib
from pathlib import Path

from prefect import task

from editr1.coldstart import run_coldstart, run_principles
from editr1.config import ColdstartConfig, CurateConfig, PrinciplesConfig, TeacherConfig, WorldConfig, config_to_dict, load_config
from editr1.lake.objects import open_object_store
from editr1.teachers.factory import build_teacher
from tasks.retry import retry_on_io
from editr1ops.tracking import log_metrics, stage_run


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _teacher_and_store(storage: str, params: str):
    teacher_cfg = load_config(TeacherConfig, "teacher", params)
    curate_cfg = load_config(CurateConfig, "curate", params)
    teacher = build_teacher(teacher_cfg, Path(storage), load_config(WorldConfig, "world", params))
    store = open_object_store(curate_cfg.object_store, Path(storage), curate_cfg.s3_endpoint_url or None)
    return teacher_cfg, teacher, store


@task(name="principles", retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_on_io)
def principles_task(storage: str, params: str) -> str:
    cfg = load_config(PrinciplesConfig, "principles", params)
    teacher_cfg, teacher, store = _teacher_and_store(storage, params)
    out = Path(storage) / "rrm" / "principles.parquet"
    summary = run_principles(cfg, Path(storage), teacher, store, out)
    with stage_run("principles", storage, {**config_to_dict(cfg), "teacher": config_to_dict(teacher_cfg)},
                   tags={"teacher": teacher.name, "data_hash": _file_hash(out)}):
        log_metrics(summary)
    return str(out)


@task(name="coldstart", retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_on_io)
def coldstart_task(storage: str, principles: str, params: str) -> dict:
    cfg = load_config(ColdstartConfig, "coldstart", params)
    teacher_cfg, teacher, store = _teacher_and_store(storage, params)
    out = Path(storage) / "rrm" / "trajectories.parquet"
    summary = run_coldstart(cfg, Path(storage), teacher, store, Path(principles), out)
    with stage_run("coldstart", storage, {**config_to_dict(cfg), "teacher": config_to_dict(teacher_cfg)},
                   tags={"teacher": teacher.name, "data_hash": _file_hash(out),
                         "principles_hash": _file_hash(Path(principles))}):
        log_metrics(summary)
    return {"trajectories": str(out), **summary}
