"""Stage configuration: one frozen dataclass per `params.yaml` section, loaded strictly.

Every stage reads its section with `load_config(CurateConfig, "curate", params_path)`; unknown keys
fail loudly so a typo in params.yaml never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from editr1.teachers.params import TeacherConfig
from editr1.world.params import WorldConfig

T = TypeVar("T")

DEFAULT_PARAMS = Path("params.yaml")
STORAGE_ENV = "EDITR1_STORAGE"


@dataclass(frozen=True)
class CurateConfig:
    """The `curate` stage: validation limits, split ratios and where images are stored."""

    split_ratios: Mapping[str, float] = field(
        default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1},
        metadata={"help": "Fraction of contexts per split; assigned by context_id, so no source "
                          "image is in two splits. Must sum to 1."},
    )
    split_salt: str = field(
        default="editr1-splits-v1",
        metadata={"help": "Salt of the split hash. Changing it would reshuffle new contexts only: "
                          "contexts already in the lake keep their recorded split."},
    )
    max_image_bytes: int = field(default=20_000_000, metadata={"help": "Larger image files are quarantined."})
    max_image_side: int = field(default=4096, metadata={"help": "Images wider or taller are quarantined (decompression bombs)."})
    min_image_side: int = field(default=8, metadata={"help": "Images narrower or shorter are quarantined."})
    allowed_formats: tuple[str, ...] = field(
        default=("PNG", "JPEG", "WEBP"), metadata={"help": "Image container formats accepted (PIL names)."})
    allowed_modes: tuple[str, ...] = field(
        default=("RGB", "RGBA", "L", "P", "LA"), metadata={"help": "PIL colour modes accepted."})
    max_instruction_chars: int = field(default=2000, metadata={"help": "Longer instructions are quarantined."})
    object_store: str = field(
        default="",
        metadata={"help": "Where image bytes go: empty = <storage>/objects, a local directory, "
                          "or s3://bucket/prefix (endpoint from s3_endpoint_url or AWS_ENDPOINT_URL)."},
    )
    io_workers: int = field(
        default=4, metadata={"help": "Threads that read, decode, hash and store images (I/O and decoding "
                                     "release the GIL). 1 = sequential."})
    s3_endpoint_url: str = field(
        default="", metadata={"help": "S3 endpoint for s3:// batches and object store (empty: AWS default / env)."})


@dataclass(frozen=True)
class DemoConfig:
    """What `editr1 demo` and `dvc repro` generate from the synthetic world."""

    pairs: int = field(default=600, metadata={"help": "Distinct preference pairs in the world batch."})
    seed: int = field(default=0, metadata={"help": "World seed (same seed → identical batch bytes)."})
    train: bool = field(
        default=True,
        metadata={"help": "Train and evaluate the RRM (sft → gcpo ∥ control → evaluate) after coldstart."})


@dataclass(frozen=True)
class PrinciplesConfig:
    """The `principles` stage: a checklist of ~10 yes/no principles per curated context."""

    splits: tuple[str, ...] = field(
        default=("train", "val", "test"),
        metadata={"help": "Splits whose contexts get checklists (evaluation and GCPO need them too)."})
    batch_size: int = field(default=32, metadata={"help": "Contexts per teacher call batch."})


@dataclass(frozen=True)
class ColdstartConfig:
    """The `coldstart` stage: K teacher traces per (context, edited image), verified, one selected."""

    splits: tuple[str, ...] = field(
        default=("train", "val"), metadata={"help": "Splits whose edited images get trajectories (SFT data)."})
    k: int = field(default=4, metadata={"help": "Candidate traces per (context, edited image)."})
    temperature: float = field(default=1.0, metadata={"help": "Teacher sampling temperature for the candidates."})
    min_agreement: float = field(
        default=0.8, metadata={"help": "Accept the selected trace only if this share of its 0/1 answers "
                                       "equals the verifier's gold labels."})
    drop_contradicting: bool = field(
        default=False,
        metadata={"help": "Reject both trajectories of a human pair whose teacher scores order it the other "
                          "way. Off in the embedded default: the SFT data then carries the teacher's rubric "
                          "bias, which is what GCPO must correct from the human pairs (DESIGN §8)."})
    batch_size: int = field(default=32, metadata={"help": "Quadruples per teacher call batch."})
    max_items: int = field(default=0, metadata={"help": "Cap on (context, image) items, 0 = all (smoke runs)."})


@dataclass(frozen=True)
class EvaluateConfig:
    """The `evaluate` stage (reward models)."""

    split: str = field(default="test", metadata={"help": "Held-out split the accuracies are reported on."})
    calibration_split: str = field(default="val", metadata={"help": "Split that calibrates the tie threshold."})
    n_samples: int = field(default=1, metadata={"help": "Samples per item (>1: self-ensembling, mean score)."})
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature (0 = greedy; >0 with n_samples > 1)."})
    batch_size: int = field(default=32, metadata={"help": "Items per generation batch."})
    max_new_tokens: int = field(default=320, metadata={"help": "Generation budget per judgement."})
    max_pairs: int = field(default=0, metadata={"help": "Cap on evaluated pairs per split, 0 = all."})
    calibration_pairs: int = field(
        default=0,
        metadata={"help": "Cap on the calibration split's pairs: a seeded sample of that many, 0 = the max_pairs cap. "
                          "One threshold per readout needs a few hundred pairs, and every model scores them."})
    bootstrap: int = field(default=1000, metadata={"help": "Paired bootstrap resamples for the CIs."})
    seed: int = field(default=0, metadata={"help": "Seed of sampling, the random baseline and the bootstrap."})
    workers: int = field(
        default=1,
        metadata={"help": "Processes that score models in parallel (one thread each; each holds one model): every "
                          "(model, split) is one job, the same call as in one process, so the scores are the same."})

    def __post_init__(self):
        if self.workers < 1:
            raise ValueError(f"evaluate.workers must be >= 1, got {self.workers}")
        if self.max_pairs < 0 or self.calibration_pairs < 0:
            raise ValueError(f"evaluate.max_pairs and calibration_pairs must be >= 0, got {self.max_pairs} and "
                             f"{self.calibration_pairs}")


STAGE_CONFIGS: dict[str, type] = {
    "demo": DemoConfig,
    "world": WorldConfig,
    "curate": CurateConfig,
    "teacher": TeacherConfig,
    "principles": PrinciplesConfig,
    "coldstart": ColdstartConfig,
    "evaluate": EvaluateConfig,
}


PROFILES = "profiles"


class ProfileError(ValueError):
    """A params.yaml profile that does not exist or does not fit its sections."""


def stage_configs() -> dict[str, type]:
    """Every params.yaml section and its dataclass: `STAGE_CONFIGS` plus the trainers' `sft` and `gcpo`
    (imported here, not at module level: the training modules import this one)."""
    from editr1.training.gcpo import GCPOConfig
    from editr1.training.sft import SFTConfig

    return {**STAGE_CONFIGS, "sft": SFTConfig, "gcpo": GCPOConfig}


def apply_profile(params: Mapping[str, Any], profile: str) -> dict[str, Any]:
    """params.yaml with the overrides of ``profiles.<profile>`` merged into their sections (key by key),
    and without the ``profiles`` section: what the stages read. "" = no overrides. Every override is
    checked against its dataclass; an unknown profile, section or key is an error."""
    profiles = dict(params.get(PROFILES) or {})
    merged = {k: dict(v) if isinstance(v, Mapping) else v for k, v in params.items() if k != PROFILES}
    if not profile:
        return merged
    if profile not in profiles:
        raise ProfileError(f"unknown profile {profile!r}; params.yaml defines {sorted(profiles) or 'none'}")
    sections = stage_configs()
    for section, overrides in (profiles[profile] or {}).items():
        if section not in sections:
            raise ProfileError(f"profile {profile!r}: unknown section {section!r}")
        if not isinstance(overrides, Mapping):
            raise ProfileError(f"profile {profile!r}: section {section!r} must be a mapping")
        merged[section] = {**(merged.get(section) or {}), **overrides}
        try:  # validate now, not mid-pipeline
            config_from_dict(sections[section], merged[section], section)
        except ValueError as err:
            raise ProfileError(f"profile {profile!r}: {err}") from None
    return merged


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Turns YAML values into the annotated type (lists → tuples); rejects obvious type errors."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _coerce(value, args[0], where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__}")
        inner = typing.get_args(annotation)
        item_type = inner[0] if inner else Any
        return tuple(_coerce(v, item_type, where) for v in value)
    if origin in (Mapping, dict, typing.Mapping) or annotation in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
        args = typing.get_args(annotation)
        val_type = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, val_type, where) for k, v in value.items()}
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        try:  # YAML 1.1 reads "3e-4" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if annotation in (int, float, str, bool) and not isinstance(value, annotation):
        raise ValueError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def config_from_dict(cls: type[T], data: Mapping[str, Any] | None, section: str = "") -> T:
    """Builds a frozen config from a mapping; unknown keys are an error, missing keys take defaults."""
    data = dict(data or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"params section '{section or cls.__name__}': unknown keys {unknown}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints[k], f"{section}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def load_params(path: Path | str = DEFAULT_PARAMS) -> dict[str, Any]:
    """Reads params.yaml (an empty dict when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return {}
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of sections")
    return loaded


def load_config(cls: type[T], section: str, params_path: Path | str = DEFAULT_PARAMS) -> T:
    """Loads one stage's section of params.yaml into its dataclass."""
    return config_from_dict(cls, load_params(params_path).get(section), section)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain (YAML/JSON-safe) dict of a config, tuples as lists."""
    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        return v
    return {f.name: plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def storage_root(explicit: Path | str | None = None) -> Path:
    """The lake root: an explicit path, else $EDITR1_STORAGE, else ./storage."""
    return Path(explicit or os.environ.get(STORAGE_ENV) or "storage")
