"""The `sft` stage end to end on a small synthetic-world lake: it trains (vision pre-training, frozen
tower or not), resumes exactly after a SIGKILL, skips a corrupt checkpoint. Whether it learns is
measured by the demo (README, "Training the RRM"), not asserted here: the bar is not met yet.

Run: HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/integration/test_sft.py
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from safetensors.torch import load_file

from editr1.demo import run_demo
from editr1.training.sft import SFTConfig, SFTTrainer, run_sft
from editr1.training.stratify import edit_kinds
from tests.integration.conftest import Killed, die_after_checkpoint

ROOT = Path(__file__).resolve().parents[2]

LAKE_PAIRS = 300
# A small, fast configuration: the tiny RRM, short runs, a short generation budget.
FAST = SFTConfig(batch_size=4, caption_batch_size=4, vision_pretrain_steps=3, vision_pretrain_batch=8, max_steps=12,
                 max_seconds=0.0, warmup_steps=2, eval_every=0, eval_pairs=2, eval_loss_examples=8, max_new_tokens=8,
                 checkpoint_every=4, keep_checkpoints=3, log_every=0)


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    """A demo lake (world → curate → principles → coldstart), no training."""
    storage = tmp_path_factory.mktemp("sft") / "lake"
    run_demo(storage, seed=0, pairs=LAKE_PAIRS, params_path=ROOT / "params.yaml", train=False)
    return storage


def stage_args(storage: Path) -> tuple[Path, Path]:
    return storage / "rrm" / "trajectories.parquet", storage / "rrm" / "principles.parquet"


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.mark.parametrize("freeze_vision", [True, False])
def test_two_steps_change_the_parameters(lake, tmp_path, freeze_vision):
    trajectories, principles = stage_args(lake)
    cfg = dataclasses.replace(FAST, max_steps=2, checkpoint_every=0, freeze_vision=freeze_vision)
    trainer = SFTTrainer(cfg, lake, trajectories, principles, tmp_path / "run")
    trainer.setup(resume=False)
    assert trainer.vision_report["vision_seconds"] > 0 and "vision_val_color" in trainer.vision_report
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    losses = [trainer.train_step(trainer.next_batches()) for _ in range(2)]
    assert all(torch.isfinite(torch.tensor(losses)))
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    vision = {n for n in before if ".visual." in f".{n}"}
    # Every weight gets a gradient (decoder, tied embeddings, and the vision tower unless it is frozen).
    assert changed == (set(before) - vision if freeze_vision else set(before)), sorted(set(before) ^ changed)[:5]
    assert trainer.model.training


def test_muon_steps_the_decoder_matrices_and_adamw_the_embedding_and_vectors(lake, tmp_path):
    trajectories, principles = stage_args(lake)
    cfg = dataclasses.replace(FAST, max_steps=2, checkpoint_every=0, optimizer="muon", freeze_vision=True)
    trainer = SFTTrainer(cfg, lake, trajectories, principles, tmp_path / "run")
    trainer.setup(resume=False)
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    muon = {names[id(p)] for g in trainer.optimizer.muon.param_groups for p in g["params"]}
    adamw = {names[id(p)] for g in trainer.optimizer.adamw.param_groups for p in g["params"]}
    assert muon and all(".layers." in n and n.endswith("_proj.weight") for n in muon), sorted(muon)
    assert any("embed_tokens" in n for n in adamw) and all(".visual." not in f".{n}" for n in muon | adamw)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    for _ in range(2):
        assert torch.isfinite(torch.tensor(trainer.train_step(trainer.next_batches())))
        trainer.step += 1
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed == muon | adamw
    with pytest.raises(ValueError, match="sft.optimizer"):
        dataclasses.replace(FAST, optimizer="sgd")


def test_lora_trains_the_adapters_only(lake, tmp_path):
    trajectories, principles = stage_args(lake)
    cfg = dataclasses.replace(FAST, checkpoint_every=0, lora=True, lora_r=4, lora_alpha=8, freeze_vision=True)
    trainer = SFTTrainer(cfg, lake, trajectories, principles, tmp_path / "run")
    trainer.setup(resume=False)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    for _ in range(2):
        assert torch.isfinite(torch.tensor(trainer.train_step(trainer.next_batches())))
        trainer.step += 1
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and all("lora_" in n for n in changed), sorted(changed)[:5]


def test_a_frozen_tower_starts_training_at_unfreeze_vision_step_at_its_own_rate(lake, tmp_path):
    trajectories, principles = stage_args(lake)
    cfg = dataclasses.replace(FAST, checkpoint_every=0, freeze_vision=True, unfreeze_vision_step=2, vision_lr_ratio=0.1)
    trainer = SFTTrainer(cfg, lake, trajectories, principles, tmp_path / "run")
    trainer.setup(resume=False)
    vision = [p for n, p in trainer.model.named_parameters() if ".visual." in f".{n}"]
    before = [p.detach().clone() for p in vision]
    for expect_frozen in (True, True, False):
        trainer.train_step(trainer.next_batches())
        trainer.step += 1
        assert all(torch.equal(a, p.detach()) for a, p in zip(before, vision)) == expect_frozen, trainer.step
    *decoder, tower = trainer.optimizer.param_groups
    assert tower["lr"] == pytest.approx(0.1 * decoder[0]["lr"]) and all(p.requires_grad for p in vision)


def test_caption_warmup_steps_train_on_captions_only(lake, tmp_path):
    trajectories, principles = stage_args(lake)
    cfg = dataclasses.replace(FAST, caption_warmup_steps=2, checkpoint_every=0)
    trainer = SFTTrainer(cfg, lake, trajectories, principles, tmp_path / "run")
    trainer.setup(resume=False)
    judge_order = trainer.sampler.state_dict()
    for _ in range(2):
        (batch,) = trainer.next_batches()  # the caption micro-batch alone
        assert batch["input_ids"].shape[0] == cfg.caption_batch_size
        assert "Questions:" not in trainer.processor.tokenizer.decode(batch["input_ids"][0])
        trainer.train_step([batch])
        trainer.step += 1
    assert trainer.sampler.state_dict() == judge_order  # no judge example was drawn
    forced = trainer.teacher_forced()
    parts = ("description", "finding", "check", "json", "score")  # and *_no when a val check says no
    assert {"val_loss", *(f"val_{p}_acc" for p in parts)} <= set(forced) <= {
        "val_loss", "val_check_no_acc", "val_finding_no_acc", *(f"val_{p}_acc" for p in parts)}
    assert forced["val_loss"] > 0 and all(0.0 <= v <= 1.0 for k, v in forced.items() if k != "val_loss")
    judge, caption = trainer.next_batches()
    assert "Questions:" in trainer.processor.tokenizer.decode(judge["input_ids"][0])
    assert judge["input_ids"].shape[1] > caption["input_ids"].shape[1]
    with pytest.raises(ValueError, match="caption_warmup_steps"):
        dataclasses.replace(FAST, caption_batch_size=0, caption_warmup_steps=2)


SCRIPT = """
import json, sys
from pathlib import Path
from editr1.config import config_from_dict
from editr1.training.sft import SFTConfig, run_sft
storage, out, cfg = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
run_sft(config_from_dict(SFTConfig, cfg, "sft"), storage, storage / "rrm/trajectories.parquet",
        storage / "rrm/principles.parquet", out)
"""


def sft_process(storage: Path, out: Path, cfg: SFTConfig) -> subprocess.Popen:
    config = json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()})
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(storage), str(out), config], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, timeout: float = 120) -> None:
    output, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, output.decode()[-3000:]


def valid_checkpoints(run: Path) -> list[str]:
    directory = run / "checkpoints"
    return sorted(p.name for p in directory.glob("step-*") if (p / "manifest.json").exists()) if directory.exists() else []


@pytest.mark.parametrize("workers, unfreeze, kept, balance, optimizer",
                         [(1, 0, False, 0.0, "adamw"), (2, 0, False, 0.0, "adamw"), (1, 6, False, 0.0, "adamw"),
                          (2, -1, True, 1.0, "muon")])
def test_resume_after_sigkill_gives_the_uninterrupted_weights(lake, tmp_path, workers, unfreeze, kept, balance,
                                                              optimizer):
    # Steps slow enough (batch 8) that the kill lands mid-run, after the first checkpoint. With two
    # workers the kill hits rank 0; the other rank loses its peer and exits. With ``unfreeze`` the tower
    # is frozen until step 6: a kill before it resumes a frozen tower, one after it a training one.
    # ``unfreeze`` -1: frozen throughout, and with ``kept`` the examples are encoded once (cache_encoded).
    # ``balance``: judgement batches stratified over edit kinds (the kind sampler's state resumes too).
    # ``optimizer`` muon: Muon's and AdamW's states are both in the checkpoint.
    cfg = dataclasses.replace(FAST, batch_size=8, workers=workers, caption_warmup_steps=2, verdict_weight=3.0,
                              freeze_vision=unfreeze != 0, unfreeze_vision_step=max(unfreeze, 0), cache_encoded=kept,
                              kind_balance=balance, optimizer=optimizer)
    reference = tmp_path / "uninterrupted"
    finish(sft_process(lake, reference, cfg))

    run = tmp_path / "killed"
    proc = sft_process(lake, run, cfg)
    deadline = time.monotonic() + 120
    while not valid_checkpoints(run):
        assert proc.poll() is None, proc.communicate()[0].decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    time.sleep(random.Random().uniform(0.0, 0.6))  # a random step after the first checkpoint
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "model").exists() and not (run / "metrics.json").exists()
    killed_at = valid_checkpoints(run)[-1]

    finish(sft_process(lake, run, cfg))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["resumed_from"].endswith(killed_at)
    assert metrics["final"]["steps"] == 12
    assert_same_weights(run / "model", reference / "model")


def test_kind_balance_gives_every_edit_kind_an_equal_share_of_the_judgement_batches(lake, tmp_path):
    trajectories, principles = stage_args(lake)
    shares = {}
    for balance in (0.0, 1.0):
        trainer = SFTTrainer(dataclasses.replace(FAST, batch_size=8, kind_balance=balance), lake, trajectories,
                             principles, tmp_path / f"b{balance}")
        trainer.setup(resume=False)
        kinds = edit_kinds([{"edited_sha": e.quad.edited_sha, "source_sha": e.quad.context.source_sha,
                             "instruction": e.quad.instruction, "principles": [], "gold": []}
                            for e in trainer.train_examples], trainer.truth)
        drawn = Counter(kinds[i] for _ in range(40) for i in trainer.sampler.next_batch())
        shares[balance] = {k: n / sum(drawn.values()) for k, n in drawn.items()}
        data = Counter(kinds)
        assert len(drawn) == len(data) == 8  # the world's eight candidate kinds
    rarest = min(data, key=data.get)
    assert shares[0.0][rarest] < 0.1 and shares[1.0][rarest] == pytest.approx(1 / 8)
    assert max(shares[1.0].values()) == pytest.approx(1 / 8)
    with pytest.raises(ValueError, match=r"kind_balance must be in \[0, 1\]"):
        dataclasses.replace(FAST, kind_balance=-0.1)


def test_kept_encodings_train_like_fresh_ones(lake, tmp_path):
    """`sft.cache_encoded`: the same steps on the same examples, the frozen tower's features computed
    once per chunk instead of in every batch — the weights agree up to float rounding."""
    trajectories, principles = stage_args(lake)
    cfg = dataclasses.replace(FAST, max_steps=4, checkpoint_every=0, freeze_vision=True, verdict_weight=3.0)
    fresh = run_sft(cfg, lake, trajectories, principles, tmp_path / "fresh", resume=False)
    kept = run_sft(dataclasses.replace(cfg, cache_encoded=True), lake, trajectories, principles, tmp_path / "kept",
                   resume=False)
    assert fresh["kept_encodings"] == 0 and kept["kept_encodings"] >= 2 * FAST.batch_size
    a, b = weights(tmp_path / "fresh" / "model"), weights(tmp_path / "kept" / "model")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=5e-5)


def test_the_fused_loss_trains_like_logits_then_loss(lake, tmp_path):
    """`sft.fused_loss` (LM head and loss fused, chunked) against the logits at the supervised
    positions then `sft_token_loss`: the same steps give the same weights up to float rounding."""
    trajectories, principles = stage_args(lake)
    cfg = dataclasses.replace(FAST, max_steps=4, checkpoint_every=0, verdict_weight=3.0)
    plain = run_sft(dataclasses.replace(cfg, fused_loss=False), lake, trajectories, principles, tmp_path / "plain",
                    resume=False)
    fused = run_sft(cfg, lake, trajectories, principles, tmp_path / "fused", resume=False)
    assert fused["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-4)
    a, b = weights(tmp_path / "plain" / "model"), weights(tmp_path / "fused" / "model")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=5e-5)


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(lake, tmp_path):
    trajectories, principles = stage_args(lake)
    run = tmp_path / "run"
    run_sft(FAST, lake, trajectories, principles, run)  # checkpoints at 4, 8 and 12
    assert valid_checkpoints(run) == ["step-00000004", "step-00000008", "step-00000012"]
    (run / "model").rename(tmp_path / "uninterrupted")
    (run / "metrics.json").unlink()
    state = run / "checkpoints" / "step-00000012" / "state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip one byte: the manifest's checksum no longer matches
    state.write_bytes(bytes(data))

    final = run_sft(FAST, lake, trajectories, principles, run)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["resumed_from"].endswith("step-00000008")
    assert final["steps"] == 12
    # Resuming from step 8 replays steps 9-12 exactly.
    assert_same_weights(run / "model", tmp_path / "uninterrupted")
    assert valid_checkpoints(run)[-1] == "step-00000012"


def test_two_workers_take_the_one_process_steps(lake, tmp_path):
    """Data parallel over two processes: each rank takes half of every batch and the gradients are
    summed, so the weights match the one-process run up to float rounding."""
    trajectories, principles = stage_args(lake)
    cfg = dataclasses.replace(FAST, max_steps=6, checkpoint_every=3)
    one = run_sft(cfg, lake, trajectories, principles, tmp_path / "one", resume=False)
    two = run_sft(dataclasses.replace(cfg, workers=2), lake, trajectories, principles, tmp_path / "two", resume=False)
    assert one["steps"] == two["steps"] == 6
    a, b = weights(tmp_path / "one" / "model"), weights(tmp_path / "two" / "model")
    assert a.keys() == b.keys()
    # Half-batch gradients without the sum would be ~1e-3 away after six Adam steps; summing the shares
    # in another order (vision pre-training, then SFT) moves a few weights by ~2e-5.
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=5e-5)
    assert valid_checkpoints(tmp_path / "two") == ["step-00000003", "step-00000006"]
    assert not list((tmp_path / "two").glob(".rendezvous-*"))


def test_a_failing_worker_is_a_clear_error(lake, tmp_path):
    trajectories, principles = stage_args(lake)
    with pytest.raises(Exception, match="no accepted train-split trajectories|data-parallel rank failed"):
        run_sft(dataclasses.replace(FAST, workers=2), lake, tmp_path / "missing.parquet", principles, tmp_path / "run")


def test_a_script_without_a_main_guard_fails_fast_instead_of_hanging(lake, tmp_path):
    config = dataclasses.replace(FAST, workers=2, max_steps=2)
    cfg = json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()})
    script = tmp_path / "unguarded.py"
    script.write_text(SCRIPT)  # runs at import: a spawned rank re-imports it and cannot start
    proc = subprocess.run([sys.executable, str(script), str(lake), str(tmp_path / "run"), cfg], cwd=ROOT,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0
    assert "__main__" in proc.stderr, proc.stderr[-2000:]


def test_prefix_report_forces_the_teachers_text_and_scores_what_follows(lake, tmp_path):
    from editr1.coldstart import load_trajectories
    from editr1.evaluation.prefix import MODES, append_ids, judge_with_prefix, prefix_ids, prefix_report, teacher_prefix
    from editr1.lake.images import ImageLoader
    from editr1.lake.objects import open_object_store
    from editr1.models import tiny_rrm
    from editr1.rrm.scoring import encode_quadruples
    from editr1.training.data import quadruple_of, reasoning_end

    rows = [r for r in load_trajectories(lake / "rrm" / "trajectories.parquet") if r["split"] == "val"][:3]
    torch.manual_seed(0)
    model, processor = tiny_rrm([r["text"] for r in rows], tmp_path / "tok")
    images = ImageLoader(open_object_store("", lake))
    target = rows[0]["text"]
    assert teacher_prefix(target, "none") == ""
    assert teacher_prefix(target, "description") == target.split("\n")[0] + "\n"
    assert teacher_prefix(target, "reasoning") == target[:reasoning_end(target)]
    assert teacher_prefix(target, "reasoning").rstrip().split("\n")[-1].endswith(("yes", "no"))  # the last check line

    # The forced tokens are the target's own, cut where a whole token ends within the prefix.
    whole = processor.tokenizer(target, add_special_tokens=False)["input_ids"]
    for mode in MODES:
        ids, text = prefix_ids(processor, target, mode)
        assert ids == whole[:len(ids)] and teacher_prefix(target, mode).startswith(text)
        assert processor.tokenizer.decode(ids) == text
    assert prefix_ids(processor, target, "none") == ([], "")
    # Appending: each row ends with its ids, re-padded on the left; nothing appended changes nothing.
    batch = encode_quadruples(processor, [quadruple_of(r, images) for r in rows[:2]])
    extra = prefix_ids(processor, target, "description")[0]
    grown = append_ids(processor, batch, [[], extra])
    assert len(extra) > 5 and grown["input_ids"][1, -len(extra):].tolist() == extra
    for i, added in enumerate((0, len(extra))):
        old = batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist()
        new = grown["input_ids"][i][grown["attention_mask"][i].bool()].tolist()
        assert new[:len(old)] == old and len(new) == len(old) + added
        assert grown["attention_mask"][i, -1] == 1  # left padding: every row ends at the last column
    assert torch.equal(grown["pixel_values"], batch["pixel_values"])

    judged = judge_with_prefix(model, processor, rows, images, "reasoning", batch_size=2, max_new_tokens=4)
    assert [text.startswith(prefix_ids(processor, r["text"], "reasoning")[1]) for (text, _), r in zip(judged, rows)] \
        == [True] * 3

    report = prefix_report(model, processor, lake, images, split="val", max_pairs=3, max_new_tokens=4)
    assert report["pairs"] == 3 and set(report["modes"]) == set(MODES)
    for mode, row in report["modes"].items():
        assert row["acc_no_ties"] == 0.0  # four new tokens reach no <score>: missing scores are wrong
        assert 0.0 <= row["line_agreement"] <= 1.0 and row["per_kind"]
    # the forced lines are the teacher's own: more of them agree the more is forced
    agreement = [report["modes"][m]["line_agreement"] for m in MODES]
    assert agreement[0] < agreement[1] < agreement[2]
    with pytest.raises(ValueError, match="mode must be one of"):
        prefix_report(model, processor, lake, images, modes=["checks"])


def test_vision_pretraining_trains_on_to_its_accuracy_floor_or_its_cap(lake, tmp_path, caplog):
    trajectories, principles = stage_args(lake)
    # A floor four steps cannot reach: rounds of a quarter of the steps (1) up to the cap, then a warning.
    cfg = dataclasses.replace(FAST, max_steps=1, checkpoint_every=0, freeze_vision=True, vision_pretrain_steps=4,
                              vision_pretrain_min_acc=1.0, vision_pretrain_max_steps=6)
    trainer = SFTTrainer(cfg, lake, trajectories, principles, tmp_path / "capped")
    with caplog.at_level("WARNING", logger="editr1.training.sft"):
        trainer.setup(resume=False)
    report = trainer.vision_report
    assert report["vision_steps"] == 6 and report["vision_reached"] == 0.0
    assert min(v for k, v in report.items() if k in ("vision_val_position", "vision_val_color", "vision_val_kind")) < 1
    assert "vision_pretrain_min_acc" in caplog.text
    # A floor it already clears: no extra step.
    low = dataclasses.replace(cfg, vision_pretrain_min_acc=0.01)
    trainer = SFTTrainer(low, lake, trajectories, principles, tmp_path / "reached")
    trainer.setup(resume=False)
    assert trainer.vision_report["vision_steps"] == 4 and trainer.vision_report["vision_reached"] == 1.0
    with pytest.raises(ValueError, match="vision_pretrain_max_steps"):
        dataclasses.replace(FAST, vision_pretrain_steps=4, vision_pretrain_max_steps=2)
    with pytest.raises(ValueError, match="vision_pretrain_min_acc"):
        dataclasses.replace(FAST, vision_pretrain_min_acc=1.5)


def test_model_selection_writes_the_best_val_weights_and_survives_a_resume(lake, tmp_path):
    # Four points over eight steps and the start; val accuracy is scripted per step so the best
    # (step 2) lies before the checkpoint the second run resumes from (step 6).
    trajectories, principles = stage_args(lake)
    cfg = dataclasses.replace(FAST, max_steps=8, checkpoint_every=6, select_points=4, select_start=True)
    values = {0: 0.50, 2: 0.90, 4: 0.60, 6: 0.70, 8: 0.60}
    weights_at: dict[int, dict[str, torch.Tensor]] = {}

    def trainer_at(out: Path) -> SFTTrainer:
        trainer = SFTTrainer(cfg, lake, trajectories, principles, out)

        def evaluate():
            weights_at[trainer.step] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
            return {"step": trainer.step, "expected_acc_no_ties": values[trainer.step]}

        trainer.evaluate = evaluate
        trainer.setup(resume=True)
        return trainer

    straight = trainer_at(tmp_path / "straight")
    straight.train()
    final = straight.finish()
    assert [e["step"] for e in straight.history] == [0, 2, 4, 6, 8]
    assert final["selected_step"] == 2.0 and final["expected_acc_no_ties"] == 0.90 and final["steps"] == 8.0
    kept = straight.model.state_dict()  # what finish() saved as out/model
    assert all(torch.equal(kept[k], weights_at[2][k]) for k in kept)
    assert not all(torch.equal(kept[k], weights_at[8][k]) for k in kept)
    assert json.loads((tmp_path / "straight" / "metrics.json").read_text())["selection"]["selected_step"] == 2

    first = trainer_at(tmp_path / "resumed")  # dies right after its step-6 checkpoint
    die_after_checkpoint(first)
    with pytest.raises(Killed):
        first.train()
    resumed = trainer_at(tmp_path / "resumed")
    resumed.train()
    assert resumed.finish()["selected_step"] == 2.0 and resumed.resumed_from is not None
    assert_same_weights(tmp_path / "resumed" / "model", tmp_path / "straight" / "model")


def test_tail_averaging_hands_on_the_mean_of_the_last_steps_and_survives_a_resume(lake, tmp_path):
    # average_tail 0.25 over eight steps: the trainable weights after steps 7 and 8 are averaged
    trajectories, principles = stage_args(lake)
    cfg = dataclasses.replace(FAST, max_steps=8, checkpoint_every=7, average_tail=0.25)
    after: dict[int, dict[str, torch.Tensor]] = {}

    def trainer_at(out: Path) -> SFTTrainer:
        trainer = SFTTrainer(cfg, lake, trajectories, principles, out)
        trainer.setup(resume=True)
        return trainer

    straight = trainer_at(tmp_path / "straight")
    train_step = straight.train_step

    def recording(batches):
        loss = train_step(batches)
        after[straight.step + 1] = {n: p.detach().clone() for n, p in straight.model.named_parameters()}
        return loss

    straight.train_step = recording
    straight.train()
    assert straight.finish()["averaged_steps"] == 2.0
    for name, p in straight.model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(p.detach(), (after[7][name] + after[8][name]) / 2, atol=1e-6), name
        else:  # a frozen tower is not averaged
            assert torch.equal(p.detach(), after[8][name])

    first = trainer_at(tmp_path / "resumed")  # dies right after its step-7 checkpoint
    die_after_checkpoint(first)
    with pytest.raises(Killed):
        first.train()
    resumed = trainer_at(tmp_path / "resumed")
    resumed.train()
    assert resumed.finish()["averaged_steps"] == 2.0 and resumed.resumed_from is not None
    assert_same_weights(tmp_path / "resumed" / "model", tmp_path / "straight" / "model")
