"""GCPO end to end on a small world lake and a tiny RRM built offline: two steps change the model
with finite, sane statistics; a run killed by SIGKILL resumes to the very same weights.

The RRM is a random tiny Qwen2.5-VL taught for a few seconds to write a short judgement
"<verdict> <score>k</score>" (k varies with the example), so that a 16-token trace ends in a score
and sampled traces disagree — a random model would never write `<score>` and every reward would be 0.

Run: .venv/bin/python -m pytest tests/integration/test_gcpo.py
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from types import SimpleNamespace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from safetensors.torch import load_file
from transformers import BatchFeature

from editr1.coldstart import load_trajectories, run_coldstart, run_principles
from editr1.config import ColdstartConfig, CurateConfig, PrinciplesConfig
from editr1.curation import add_batch
from editr1.lake.images import ImageLoader
from editr1.lake.objects import open_object_store
from editr1.models.rrm import TinyRRMSpec, repeat_batch, save_rrm, tiny_rrm
from editr1.rrm.corpus import trajectory_corpus
from editr1.teachers.factory import build_teacher
from editr1.teachers.params import TeacherConfig
from editr1.training.checkpoint import save_checkpoint
from editr1.training.data import SFTExample, encode_sft_batch, model_inputs, quadruple_of
from editr1.training.gcpo import GCPOConfig, GCPOTrainer
from editr1.training.losses import sft_token_loss
from editr1.models.rrm import generate_ids
from editr1.rrm.scoring import encode_quadruples
from editr1.training.rollout import (INPUT_KEYS, sample_completions, score_token_mask, score_traces, select_groups,
                                     token_logprobs)
from editr1.world import WorldConfig, write_batch
from tests.integration.conftest import Killed, die_after_checkpoint

torch.set_num_threads(1)

SMALL = dict(n_samples=4, pairs_per_step=2, max_new_tokens=16, temperature=1.0, lr=1e-3, inner_epochs=2,
             eval_pairs=0, max_seconds=0.0, checkpoint_every=1, keep_checkpoints=3, seed=3, warmup_steps=3)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A curated world lake with principles and teacher trajectories, and a tiny 'SFT' RRM."""
    root = tmp_path_factory.mktemp("gcpo")
    storage = root / "lake"
    write_batch(storage / "incoming" / "w", 60, 11, WorldConfig())
    add_batch(storage / "incoming" / "w", storage, CurateConfig())
    teacher = build_teacher(TeacherConfig(), storage, WorldConfig())
    store = open_object_store("", storage)
    principles = storage / "rrm" / "principles.parquet"
    trajectories = storage / "rrm" / "trajectories.parquet"
    run_principles(PrinciplesConfig(), storage, teacher, store, principles)
    run_coldstart(ColdstartConfig(k=2), storage, teacher, store, principles, trajectories)

    rows = load_trajectories(trajectories, split="train")[:16]
    model, processor = tiny_rrm(trajectory_corpus(rows), root / "rrm", TinyRRMSpec(vocab_size=600))
    images = ImageLoader(store)
    examples = [SFTExample(quadruple_of(r, images), f"ok {i % 3}. <score>{4 + i % 5}</score>")
                for i, r in enumerate(rows)]
    batch = encode_sft_batch(processor, examples)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for _ in range(40):
            optimizer.zero_grad()
            sft_token_loss(model(**model_inputs(batch)).logits, batch["labels"]).backward()
            optimizer.step()
    save_rrm(model, processor, root / "sft")
    return {"storage": storage, "sft": root / "sft", "trajectories": trajectories, "principles": principles,
            "root": root}


def trainer_for(world, out: Path, **overrides) -> GCPOTrainer:
    cfg = GCPOConfig(**{**SMALL, **overrides})
    return GCPOTrainer(cfg, world["storage"], world["sft"], world["trajectories"], world["principles"], out)


def test_two_steps_change_the_model_with_sane_stats(world, tmp_path):
    trainer = trainer_for(world, tmp_path / "run", max_steps=2, beta=0.02, skip_zero_advantage=True)
    trainer.setup(resume=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert trainer.reference is not None and trainer.model.training is False
    for _ in range(2):
        trainer.history.append(trainer.step_once())
    after = trainer.model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "no parameter changed"
    assert any("visual" in k for k in changed) and any("language_model" in k for k in changed)
    # linear warm-up over SMALL's 3 steps, set on the optimizer before each update
    assert [entry["lr"] for entry in trainer.history] == pytest.approx([1e-3 / 3, 2e-3 / 3])
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(2e-3 / 3)
    for entry in trainer.history:
        assert entry["updated"] == 1.0
        assert 0.0 <= entry["reward_mean"] <= 1.0
        assert 0.0 < entry["parse_rate"] <= 1.0
        assert entry["tau_valid"] == pytest.approx(entry["parse_rate"])  # τ exists exactly where a trace parses
        assert 0.0 <= entry["zero_advantage_frac"] < 1.0
        assert abs(entry["adv_mean"]) < 1e-6  # mean-centred per group
        assert entry["adv_std"] > 0
        assert 1 <= entry["response_length"] <= SMALL["max_new_tokens"]
        assert 0.0 <= entry["clip_fraction"] <= 1.0
        assert entry["approx_kl"] >= 0 and entry["kl"] >= 0
        for key in ("loss", "policy_loss", "mean_adv_over_len", "grad_norm"):
            assert torch.isfinite(torch.tensor(entry[key])), (key, entry[key])
    # The reference stays the SFT model.
    reference = trainer.reference.state_dict()
    assert all(torch.equal(reference[k], before[k]) for k in before)


def test_linear_schedule_decays_the_lr_with_the_runs_progress(world, tmp_path):
    # warm-up over 2 steps, then down to 0 with progress = max(step / max_steps, seconds / max_seconds)
    trainer = trainer_for(world, tmp_path / "run", lr=1e-3, warmup_steps=2, max_steps=4, schedule="linear")
    lrs = []
    for step in range(4):
        trainer.step = step
        lrs.append(trainer.learning_rate())
    assert lrs == pytest.approx([1e-3 * 0.5, 1e-3 * 0.75, 1e-3 * 0.5, 1e-3 * 0.25])
    timed = trainer_for(world, tmp_path / "timed", lr=1e-3, warmup_steps=0, max_steps=0, max_seconds=10.0,
                        schedule="linear")
    timed.step, timed.train_seconds = 5, 7.5
    assert timed.learning_rate() == pytest.approx(2.5e-4)
    timed.train_seconds = 12.0  # past the budget: never negative
    assert timed.learning_rate() == 0.0
    assert trainer_for(world, tmp_path / "flat", lr=1e-3, warmup_steps=0, max_steps=4).learning_rate() == 1e-3
    with pytest.raises(ValueError, match="schedule"):
        GCPOConfig(**{**SMALL, "max_steps": 4, "schedule": "cosine"})


def test_sft_mix_adds_the_sft_loss_to_the_update(world, tmp_path):
    plain = trainer_for(world, tmp_path / "plain", max_steps=1, warmup_steps=0)
    mixed = trainer_for(world, tmp_path / "mixed", max_steps=1, warmup_steps=0, sft_mix=1.0, sft_mix_batch=4)
    plain.setup(resume=False)
    mixed.setup(resume=False)
    assert plain.mix is None and mixed.mix is not None
    # the batch of a step is a function of (seed, step): a resumed run draws the same one
    assert mixed.mix.indices(7) == mixed.mix.indices(7) != mixed.mix.indices(8)
    assert len(set(mixed.mix.indices(0))) == 4
    entry = mixed.step_once()
    assert math.isfinite(entry["sft_mix_loss"]) and entry["sft_mix_loss"] > 0
    assert "sft_mix_loss" not in plain.step_once()
    # same rollout (same seed, same start), so any difference in the weights is the mixed-in loss
    a, b = plain.model.state_dict(), mixed.model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="sft_mix"):
        GCPOConfig(**{**SMALL, "max_steps": 1, "sft_mix": -1.0})


def test_sft_mix_without_verdicts_holds_only_the_reading(world, tmp_path):
    # sft_mix_verdicts 0: the mixed-in loss weighs the checks' yes/no, the JSON list and the score 0
    full = trainer_for(world, tmp_path / "full", max_steps=1, sft_mix=1.0, sft_mix_batch=4)
    reading = trainer_for(world, tmp_path / "reading", max_steps=1, sft_mix=1.0, sft_mix_batch=4,
                          sft_mix_verdicts=0.0)
    full.setup(resume=False)
    reading.setup(resume=False)
    assert "loss_weights" not in full.mix.batch(0)
    batch = reading.mix.batch(0)
    labels, weights = batch["labels"], batch["loss_weights"]
    assert torch.equal(labels, full.mix.batch(0)["labels"])
    dropped = (weights == 0) & (labels != -100)
    kept = (weights > 0) & (labels != -100)
    assert dropped.any() and kept.any()
    words = set(reading.processor.tokenizer.decode(labels[dropped].tolist()).split())
    assert words & {"yes", "no"} and not words & {"circle", "square", "triangle", "star"}
    with torch.no_grad():
        assert reading.mix.loss_fn(reading.model, 0)() != pytest.approx(float(full.mix.loss_fn(full.model, 0)()))
    with pytest.raises(ValueError, match="sft_mix_verdicts"):
        GCPOConfig(**{**SMALL, "max_steps": 1, "sft_mix": 1.0, "sft_mix_verdicts": -1.0})


def test_first_epoch_ratio_is_one_and_stats_report_the_update(world, tmp_path):
    # One inner epoch: the PPO ratio is exactly 1 (the old log-probs come from the same forward).
    trainer = trainer_for(world, tmp_path / "run", max_steps=1, inner_epochs=1)
    trainer.setup(resume=False)
    entry = trainer.step_once()
    assert entry["ratio"] == pytest.approx(1.0, abs=1e-6) and entry["clip_fraction"] == 0.0
    assert entry["approx_kl"] == pytest.approx(0.0, abs=1e-7)


def test_shared_prompt_logprobs_equal_full_sequences(world, tmp_path):
    # token_logprobs runs each prompt once and shares its cache with the group's N traces; the
    # log-probs and their gradients must equal a plain forward over the 2PN full sequences.
    trainer = trainer_for(world, tmp_path / "run", max_steps=1)
    trainer.setup(resume=False)
    model, processor = trainer.model, trainer.processor
    rollout = trainer.rollout(trainer.next_pairs())
    n = rollout.n_samples
    prompts = repeat_batch(processor, BatchFeature(rollout.prompts), n)
    mask = rollout.completion_mask.long()
    full = dict(prompts)
    full["input_ids"] = torch.cat([prompts["input_ids"], rollout.completion_ids], dim=1)
    full["attention_mask"] = torch.cat([prompts["attention_mask"], mask], dim=1)
    full["mm_token_type_ids"] = torch.cat([prompts["mm_token_type_ids"], torch.zeros_like(mask)], dim=1)
    length = prompts["input_ids"].shape[1]
    hidden = model.model(**full, use_cache=False).last_hidden_state[:, length - 1 : -1]
    plain = torch.log_softmax(model.get_output_embeddings()(hidden).float(), dim=-1)
    plain = plain.gather(-1, rollout.completion_ids[..., None])[..., 0] * rollout.completion_mask
    plain.sum().backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    shared = token_logprobs(model, rollout)[0]
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=1e-5)
    shared.sum().backward()
    for name, grad in grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, atol=1e-4, rtol=1e-4)
    # A subset of groups (e.g. the non-zero-advantage ones) gives the same rows' log-probs.
    with torch.no_grad():
        sub = select_groups(processor, rollout, [1, 2])
        rows = list(range(n, 3 * n))
        got = token_logprobs(model, sub)[0]
        torch.testing.assert_close(got, shared.detach()[rows, : got.shape[1]], atol=1e-5, rtol=1e-5)
        assert sub.texts == [rollout.texts[r] for r in rows]


def test_expected_tau_of_an_unparsed_trace_is_a_failure(world, tmp_path):
    # Under the expected readout a trace the parser rejects gets τ = NaN (it loses every comparison),
    # even when it wrote a <score> the readout could read; the other traces keep their τ.
    trainer = trainer_for(world, tmp_path / "run", max_steps=1)
    trainer.setup(resume=False)
    rollout = trainer.rollout(trainer.next_pairs())
    with torch.no_grad():
        tau = score_traces(trainer.model, trainer.processor, rollout, "expected").tau.flatten()
        readable = torch.nonzero(~tau.isnan()).flatten()
        assert readable.numel() >= 2, rollout.texts
        broken = replace(rollout, parsed=rollout.parsed.clone())
        broken.parsed[readable[0]] = float("nan")
        after = score_traces(trainer.model, trainer.processor, broken, "expected").tau.flatten()
    assert after[readable[0]].isnan()
    keep = torch.ones_like(tau, dtype=torch.bool)
    keep[readable[0]] = False
    assert torch.allclose(after[keep], tau[keep], equal_nan=True)


def test_score_token_mask_holds_the_score_or_the_whole_failed_trace(world, tmp_path):
    trainer = trainer_for(world, tmp_path / "run", max_steps=1)
    trainer.setup(resume=False)
    tokenizer = trainer.processor.tokenizer
    rows = [tokenizer.encode("ok 1. <score>7</score>"), tokenizer.encode("ok 1. no score here")]
    width = max(map(len, rows)) + 1
    ids = torch.tensor([row + [0] * (width - len(row)) for row in rows])
    mask = torch.tensor([[1.0] * len(row) + [0.0] * (width - len(row)) for row in rows])  # padding after the stop
    rollout = SimpleNamespace(completion_ids=ids, completion_mask=mask)
    got = score_token_mask(trainer.processor, rollout)
    assert tokenizer.decode(ids[0][got[0].bool()]) == "7</score>"
    assert torch.equal(got[1], mask[1])  # no <score>: every generated token keeps its share


def test_score_only_policy_tokens_train(world, tmp_path):
    trainer = trainer_for(world, tmp_path / "run", max_steps=1, policy_tokens="score")
    trainer.setup(resume=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    entry = trainer.step_once()
    assert entry["updated"] == 1.0 and 0.0 <= entry["clip_fraction"] <= 1.0
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    with pytest.raises(ValueError, match="policy_tokens"):
        GCPOConfig(policy_tokens="verdicts")


def test_exact_score_policy_term_trains_the_score(world, tmp_path):
    trainer = trainer_for(world, tmp_path / "run", max_steps=1, policy_tokens="score_exact", tau_readout="parsed",
                          max_new_tokens=48)
    trainer.setup(resume=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    entry = trainer.step_once()
    assert entry["updated"] == 1.0 and math.isfinite(entry["loss"]) and entry["exact_share"] > 0
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    with pytest.raises(ValueError, match="score_exact"):
        GCPOConfig(policy_tokens="score_exact", tau_readout="expected")


def test_exact_score_term_learns_from_one_trace_per_side(world, tmp_path):
    # N = 1: each group holds one trace, so its sampled advantage is 0 by construction, but the exact
    # score term still scores every score the trace could write against the other side's trace.
    trainer = trainer_for(world, tmp_path / "run", max_steps=1, policy_tokens="score_exact", tau_readout="parsed",
                          max_new_tokens=48, n_samples=1)
    trainer.setup(resume=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    entry = trainer.step_once()
    assert entry["zero_advantage_frac"] == 1.0 and entry["exact_share"] > 0
    assert 0.0 <= entry["zero_signal_frac"] <= 1.0 and 0.0 <= entry["exact_signal"] <= 1.0
    assert entry["updated"] == 1.0 and math.isfinite(entry["loss"])
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_sampler_matches_generate(world, tmp_path):
    # The rollout's sampler (prompt prefilled once, cache shared by the N samples) decodes exactly
    # what `generate_ids` decodes: compared greedily, token for token, on left-padded prompts.
    trainer = trainer_for(world, tmp_path / "run", max_steps=1)
    trainer.setup(resume=False)
    model, processor = trainer.model, trainer.processor
    quads = [q for pair in trainer.next_pairs().quads for q in pair]
    encoded = encode_quadruples(processor, quads)
    prompts = {k: encoded[k] for k in INPUT_KEYS if k in encoded}
    reference = generate_ids(model, processor, encoded, 20, temperature=0.0)
    ids, mask = sample_completions(model, processor, prompts, 1, 20, temperature=0.0, seed=0)
    assert torch.equal(ids, reference.completion_ids[:, : ids.shape[1]])
    assert torch.equal(mask, reference.completion_mask[:, : ids.shape[1]].long())
    assert not reference.completion_mask[:, ids.shape[1]:].any()
    # Sampling: n rows per prompt, reproducible by seed, the global RNG untouched.
    state = torch.get_rng_state()
    a = sample_completions(model, processor, prompts, 3, 12, temperature=1.0, seed=5)
    b = sample_completions(model, processor, prompts, 3, 12, temperature=1.0, seed=5)
    assert torch.equal(a[0], b[0]) and a[0].shape[0] == 3 * len(quads)
    assert torch.equal(torch.get_rng_state(), state)


def _run_in_subprocess(world, out: Path, max_steps: int, kill_after_checkpoint: int | None) -> None:
    args = {k: str(v) for k, v in world.items()} | {"out": str(out), "max_steps": max_steps, "small": SMALL}
    code = (
        "import json, sys, torch\n"
        "torch.set_num_threads(1)\n"
        "from pathlib import Path\n"
        "from editr1.training.gcpo import GCPOConfig, run_gcpo\n"
        "a = json.loads(sys.argv[1])\n"
        "cfg = GCPOConfig(**{**a['small'], 'max_steps': a['max_steps']})\n"
        "run_gcpo(cfg, Path(a['storage']), Path(a['sft']), Path(a['trajectories']), Path(a['principles']),"
        " Path(a['out']))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kill_after_checkpoint is None:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-3000:]
        return
    marker = out / "checkpoints" / f"step-{kill_after_checkpoint:08d}" / "manifest.json"
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_exact_resume_after_sigkill(world, tmp_path):
    steps = 4
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _run_in_subprocess(world, straight, steps, None)
    _run_in_subprocess(world, killed, steps, kill_after_checkpoint=2)
    assert not (killed / "model").exists()
    _run_in_subprocess(world, killed, steps, None)  # resumes from the newest valid checkpoint

    a = load_file(straight / "model" / "model.safetensors")
    b = load_file(killed / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    report_a = json.loads((straight / "metrics.json").read_text())
    report_b = json.loads((killed / "metrics.json").read_text())
    assert report_b["resumed_from"] is not None and report_a["resumed_from"] is None
    strip = ("rollout_seconds", "update_seconds", "train_seconds")
    assert [{k: v for k, v in e.items() if k not in strip} for e in report_a["history"]] == \
           [{k: v for k, v in e.items() if k not in strip} for e in report_b["history"]]
    assert len(report_b["history"]) == steps


def test_resume_with_other_settings_is_refused(world, tmp_path):
    out = tmp_path / "run"
    first = trainer_for(world, out, max_steps=1)
    first.setup(resume=False)
    first.history.append(first.step_once())
    first.save_checkpoint()
    other = trainer_for(world, out, max_steps=2, lr=5e-4)
    with pytest.raises(ValueError, match="lr"):
        other.setup(resume=True)


def test_resume_from_a_checkpoint_older_than_a_field(world, tmp_path):
    # a checkpoint saved before a config field existed resumes when the run keeps that field's default
    out = tmp_path / "run"
    first = trainer_for(world, out, max_steps=1)
    first.setup(resume=False)
    first.history.append(first.step_once())
    state = first.state()
    del state["config"]["sft_mix"]
    save_checkpoint(first.checkpoint_dir, first.step, state)
    later = trainer_for(world, out, max_steps=2)
    later.setup(resume=True)
    assert later.resumed_from is not None and later.step == 1
    with pytest.raises(ValueError, match="sft_mix"):
        trainer_for(world, out, max_steps=2, sft_mix=0.5).setup(resume=True)


def test_score_kl_holds_the_score_distribution(world, tmp_path):
    # score_kl > 0 loads the reference even at beta 0 and adds the exact KL of each trace's score
    # distribution: zero at the first epoch (the policy is the reference), then it shapes the second
    # epoch's step, so the same rollout ends with other weights than without it.
    weights = {}
    for weight in (0.0, 10.0):
        trainer = trainer_for(world, tmp_path / f"run{weight}", max_steps=1, policy_tokens="score_exact",
                              tau_readout="parsed", max_new_tokens=48, beta=0.0, score_kl=weight, inner_epochs=2)
        trainer.setup(resume=False)
        assert (trainer.reference is not None) == (weight > 0)
        entry = trainer.step_once()
        assert entry["updated"] == 1.0 and entry["exact_share"] > 0
        if weight > 0:
            assert entry["score_kl"] == pytest.approx(0.0, abs=1e-6)
        weights[weight] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert any(not torch.equal(weights[0.0][k], weights[10.0][k]) for k in weights[0.0])
    with pytest.raises(ValueError, match="score_kl"):
        GCPOConfig(score_kl=0.1)  # policy_tokens all: its score is trained through the sampled token
    with pytest.raises(ValueError, match="score_kl_pairs"):
        GCPOConfig(score_kl_pairs="unsolved")


def test_exact_log_weights_the_exact_term_by_the_inverse_expected_reward(world, tmp_path):
    # exact_log > 0: each trace's exact term is divided by max(R̄, floor) (the gradient of log R̄), so the
    # same rollout ends with other weights than the linear reward's, and the mean weight is logged (>= 1).
    weights = {}
    for floor in (0.0, 0.05):
        trainer = trainer_for(world, tmp_path / f"run{floor}", max_steps=1, policy_tokens="score_exact",
                              tau_readout="parsed", max_new_tokens=48, beta=0.0, exact_log=floor)
        trainer.setup(resume=False)
        entry = trainer.step_once()
        assert entry["updated"] == 1.0 and entry["exact_share"] > 0
        assert ("exact_weight" in entry) == (floor > 0)
        if floor > 0:
            assert 1.0 <= entry["exact_weight"] <= 1.0 / floor
        weights[floor] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert any(not torch.equal(weights[0.0][k], weights[0.05][k]) for k in weights[0.0])
    for bad in ({"exact_log": 0.1}, {"exact_log": -0.1, "policy_tokens": "score_exact", "tau_readout": "parsed"},
                {"exact_log": 1.5, "policy_tokens": "score_exact", "tau_readout": "parsed"}):
        with pytest.raises(ValueError, match="exact_log"):
            GCPOConfig(**bad)


@pytest.mark.parametrize("solved", [False, True])
def test_score_kl_on_solved_pairs_holds_only_those(world, tmp_path, monkeypatch, solved):
    # score_kl_pairs solved: the KL covers the rows of the pairs `solved_pairs` marks and no others; with
    # every pair marked the run is score_kl on all pairs, with none it is no score_kl at all.
    import editr1.training.gcpo as gcpo_module

    monkeypatch.setattr(gcpo_module, "solved_pairs", lambda r_w, r_l: torch.full(r_w.shape[:1], solved))
    runs = {}
    for name, pairs, weight in (("solved", "solved", 10.0), ("all", "all", 10.0), ("none", "all", 0.0)):
        trainer = trainer_for(world, tmp_path / name, max_steps=1, policy_tokens="score_exact", tau_readout="parsed",
                              max_new_tokens=48, beta=0.0, score_kl=weight, score_kl_pairs=pairs, inner_epochs=2)
        trainer.setup(resume=False)
        entry = trainer.step_once()
        assert 0.0 <= entry["solved_pairs"] <= 1.0
        runs[name] = trainer.model.state_dict()
    same = runs["all"] if solved else runs["none"]
    other = runs["none"] if solved else runs["all"]
    assert all(torch.equal(runs["solved"][k], same[k]) for k in same)
    assert any(not torch.equal(runs["solved"][k], other[k]) for k in other)


def test_model_selection_writes_the_best_val_weights_and_survives_a_resume(world, tmp_path):
    # Four points over four steps, the start a candidate too; val accuracy is scripted per step so the
    # best (step 1) lies before the checkpoint the second run resumes from (step 3).
    values = {0: 0.50, 1: 0.90, 2: 0.60, 3: 0.70, 4: 0.60}
    weights_at: dict[int, dict[str, torch.Tensor]] = {}

    def scripted(trainer):
        def evaluate():
            weights_at[trainer.step] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
            return {"step": trainer.step, "expected_acc_no_ties": values[trainer.step]}
        return evaluate

    settings = dict(max_steps=4, select_points=4, select_start=True, eval_pairs=4, checkpoint_every=3)
    straight = trainer_for(world, tmp_path / "straight", **settings)
    straight.evaluate = scripted(straight)
    final = run_trainer(straight)
    assert [e["step"] for e in straight.evaluations] == [0, 1, 2, 3, 4]
    assert final["selected_step"] == 1.0 and final["expected_acc_no_ties"] == 0.90 and final["steps"] == 4.0
    kept = straight.model.state_dict()  # what finish() saved as out/model
    assert all(torch.equal(kept[k], weights_at[1][k]) for k in kept)
    assert not all(torch.equal(kept[k], weights_at[4][k]) for k in kept)
    saved = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    report = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert report["selection"]["selected_step"] == 1 and len(report["selection"]["candidates"]) == 5

    first = trainer_for(world, tmp_path / "resumed", **settings)  # dies right after its step-3 checkpoint
    first.evaluate = scripted(first)
    die_after_checkpoint(first)
    with pytest.raises(Killed):
        run_trainer(first)
    resumed = trainer_for(world, tmp_path / "resumed", **settings)
    resumed.evaluate = scripted(resumed)
    assert run_trainer(resumed)["selected_step"] == 1.0 and resumed.resumed_from is not None
    again = load_file(tmp_path / "resumed" / "model" / "model.safetensors")
    assert all(torch.equal(saved[k], again[k]) for k in saved)


def run_trainer(trainer: GCPOTrainer) -> dict[str, float]:
    trainer.setup(resume=True)
    trainer.train()
    return trainer.finish()


def test_tail_averaging_hands_on_the_mean_of_the_last_steps_and_survives_a_resume(world, tmp_path):
    # average_tail 0.75 over four steps: the weights after steps 2, 3 and 4 (progress > 0.25) are averaged
    settings = dict(max_steps=4, average_tail=0.75, checkpoint_every=3)
    after: dict[int, dict[str, torch.Tensor]] = {}
    straight = trainer_for(world, tmp_path / "straight", **settings)
    step_once = straight.step_once

    def recording():
        entry = step_once()
        after[straight.step] = {k: v.detach().clone() for k, v in straight.model.state_dict().items()}
        return entry

    straight.step_once = recording
    final = run_trainer(straight)
    assert final["averaged_steps"] == 3.0 and straight.evaluations[-1]["averaged_steps"] == 3
    model = straight.model.state_dict()
    for key, value in model.items():
        if value.is_floating_point():
            assert torch.allclose(value, (after[2][key] + after[3][key] + after[4][key]) / 3, atol=1e-6), key
    assert not all(torch.equal(model[k], after[4][k]) for k in model)

    first = trainer_for(world, tmp_path / "resumed", **settings)  # dies right after its step-3 checkpoint
    die_after_checkpoint(first)
    with pytest.raises(Killed):
        run_trainer(first)
    resumed = trainer_for(world, tmp_path / "resumed", **settings)
    assert run_trainer(resumed)["averaged_steps"] == 3.0 and resumed.resumed_from is not None
    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
