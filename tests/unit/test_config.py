"""params.yaml ↔ config dataclasses: every section loads, unknown keys fail, every field is documented."""

import dataclasses

import pytest

from editr1.config import (
    PROFILES,
    CurateConfig,
    apply_profile,
    config_from_dict,
    config_to_dict,
    load_config,
    load_params,
    stage_configs,
)
from tests.conftest import ROOT


def test_params_yaml_loads_into_every_dataclass():
    params = load_params(ROOT / "params.yaml")
    assert set(params) - {PROFILES} == set(stage_configs()), "params.yaml sections and config dataclasses differ"
    for section, cls in stage_configs().items():
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


def test_a_float_written_without_a_dot_is_a_float():
    # YAML 1.1 (PyYAML) reads 3e-4 as a string; `--set lr=3e-4` must still mean 0.0003
    from editr1.training.gcpo import GCPOConfig

    assert config_from_dict(GCPOConfig, {"lr": "3e-4"}, "gcpo").lr == 3e-4
    with pytest.raises(ValueError, match="gcpo.lr: expected float"):
        config_from_dict(GCPOConfig, {"lr": "fast"}, "gcpo")


def test_every_field_has_help():
    for cls in stage_configs().values():
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"


def test_every_profile_applies_and_validates():
    params = load_params(ROOT / "params.yaml")
    assert params[PROFILES], "params.yaml defines no demo profile"
    for name in params[PROFILES]:
        merged = apply_profile(params, name)
        assert PROFILES not in merged
        for section, cls in stage_configs().items():
            config_from_dict(cls, merged[section], section)


def test_a_profile_overrides_only_its_keys():
    params = {"sft": {"lr": 0.1, "max_seconds": 10.0}, PROFILES: {"long": {"sft": {"max_seconds": 99.0}}}}
    assert apply_profile(params, "long") == {"sft": {"lr": 0.1, "max_seconds": 99.0}}
    assert apply_profile(params, "") == {"sft": {"lr": 0.1, "max_seconds": 10.0}}
    assert params["sft"]["max_seconds"] == 10.0  # the input is left alone


@pytest.mark.parametrize("profiles, match", [
    ({}, "unknown profile 'long'"),
    ({"long": {"nosuch": {}}}, "unknown section 'nosuch'"),
    ({"long": {"sft": {"nosuch": 1}}}, "unknown keys \\['nosuch'\\]"),
    ({"long": {"sft": {"lr": "fast"}}}, "sft.lr"),
])
def test_a_bad_profile_is_a_clear_error(profiles, match):
    with pytest.raises(ValueError, match=match):
        apply_profile({"sft": {}, PROFILES: profiles}, "long")


def test_the_control_continues_sft_on_judgements_from_its_first_step():
    from editr1.training.gcpo import GCPOConfig
    from editr1.training.rrm_pipeline import control_config
    from editr1.training.sft import SFTConfig

    sft = SFTConfig(caption_batch_size=4, caption_warmup_steps=300, warmup_steps=40, workers=2, eval_every=50,
                    eval_pairs=64)
    gcpo = GCPOConfig(select_points=3, select_start=True, eval_pairs=200, eval_batch_size=16, average_tail=0.4)
    control = control_config(sft, gcpo, 90.0)
    # GCPO's model selection, on the same val pairs: the comparison stays one procedure on both sides
    assert (control.select_points, control.select_start) == (3, True)
    assert (control.eval_pairs, control.eval_batch_size, control.average_tail) == (200, 16, 0.4)
    # the lr warm-up stays: a fresh Adam's first step at the peak lr shakes a converged model
    assert (control.caption_warmup_steps, control.warmup_steps, control.workers, control.eval_every) == (0, 40, 1, 0)
    assert (control.max_seconds, control.max_steps) == (90.0, 0)
    assert (control.verdict_weight, control.caption_batch_size, control.lr) == (sft.verdict_weight, 4, sft.lr)
