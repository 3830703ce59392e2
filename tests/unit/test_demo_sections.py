"""The demo summary's `sft` and `gcpo` sections, built from a training result (no training here)."""

from __future__ import annotations

from editr1.training.rrm_pipeline import demo_sections


def result(**gcpo_final: float) -> dict:
    model = {"expected": {"acc_no_ties": 0.7}, "parsed": {"acc_no_ties": 0.6}, "parse_rate": 1.0}
    return {"eval": {"models": {"sft": model, "gcpo": model, "control": model}},
            "gcpo": gcpo_final, "sft_seconds": 10.0, "rl_seconds": 5.0}


def test_gcpo_section_reports_the_exact_terms_signal_only_when_it_ran():
    sampled = demo_sections(result(zero_advantage_frac=0.7))["gcpo"]
    assert sampled["zero_advantage_frac"] == 0.7 and "zero_signal_frac" not in sampled
    exact = demo_sections(result(zero_advantage_frac=1.0, zero_signal_frac=0.4))["gcpo"]
    assert exact["zero_advantage_frac"] == 1.0 and exact["zero_signal_frac"] == 0.4
    assert exact["test_acc_no_ties"] == 0.7 and exact["control_test_acc_no_ties"] == 0.7


def test_gcpo_section_reports_each_sides_selected_step_only_with_selection():
    assert "selected_step" not in demo_sections(result(zero_advantage_frac=0.5))["gcpo"]
    selected = result(zero_advantage_frac=0.5, selected_step=60.0)
    selected["control"] = {"selected_step": 0.0}
    section = demo_sections(selected)["gcpo"]
    assert (section["selected_step"], section["control_selected_step"]) == (60.0, 0.0)
