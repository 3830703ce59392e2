"""Builds the configured teacher: a plain dict maps `teacher.kind` to a builder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from editr1.teachers.base import Teacher
from editr1.teachers.params import TeacherConfig
from editr1.world.params import WorldConfig


def _oracle(cfg: TeacherConfig, storage: Path, world: WorldConfig) -> Teacher:
    from editr1.teachers.oracle import OracleTeacher
    from editr1.world.truth import WorldTruth

    truth = WorldTruth.from_lake(storage)
    if not len(truth):
        raise ValueError(f"the oracle teacher needs world scene graphs, and {storage} has none "
                         "(curate a world batch first, or set teacher.kind to openai / hf)")
    return OracleTeacher(truth, cfg, world)


def _openai(cfg: TeacherConfig, storage: Path, world: WorldConfig) -> Teacher:
    from editr1.teachers.openai_teacher import OpenAITeacher

    return OpenAITeacher(cfg, Path(cfg.cache_dir) if cfg.cache_dir else storage / "teacher_cache")


def _hf(cfg: TeacherConfig, storage: Path, world: WorldConfig) -> Teacher:
    from editr1.models import load_rrm
    from editr1.teachers.hf_teacher import HFTeacher

    if not cfg.hf_model:
        raise ValueError("teacher.kind is hf but teacher.hf_model is empty")
    model, processor = load_rrm(cfg.hf_model)
    return HFTeacher(model, processor, cfg)


BUILDERS: dict[str, Callable[[TeacherConfig, Path, WorldConfig], Teacher]] = {
    "oracle": _oracle, "openai": _openai, "hf": _hf,
}


def build_teacher(cfg: TeacherConfig, storage: Path, world: WorldConfig) -> Teacher:
    try:
        builder = BUILDERS[cfg.kind]
    except KeyError:
        raise ValueError(f"unknown teacher.kind {cfg.kind!r}; one of {sorted(BUILDERS)}") from None
    return builder(cfg, Path(storage), world)
