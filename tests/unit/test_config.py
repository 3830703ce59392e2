"""params.yaml ↔ config dataclasses: every section loads, unknown keys fail, every field is documented."""

import dataclasses

import pytest

from editr1.config import STAGE_CONFIGS, CurateConfig, config_from_dict, config_to_dict, load_config, load_params
from tests.conftest import ROOT


def test_params_yaml_loads_into_every_dataclass():
    params = load_params(ROOT / "params.yaml")
    assert set(params) == set(STAGE_CONFIGS), "params.yaml sections and config dataclasses differ"
    for section, cls in STAGE_CONFIGS.items():
        cfg = load_config(cls, section, ROOT / "params.yaml")
        # the file states every field explicitly, so the file is the single place to read settings
        assert set(params[section]) == {f.name for f in dataclasses.fields(cls)}, section
        assert config_from_dict(cls, config_to_dict(cfg), section) == cfg


def test_unknown_key_is_an_error():
    with pytest.raises(ValueError, match="unknown keys \\['split_ratio'\\]"):
        config_from_dict(CurateConfig, {"split_ratio": {"train": 1.0}}, "curate")


def test_wrong_type_is_an_error():
    with pytest.raises(ValueError, match="curate.max_image_side"):
        config_from_dict(CurateConfig, {"max_image_side": "big"}, "curate")


def test_every_field_has_help():
    for cls in STAGE_CONFIGS.values():
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
