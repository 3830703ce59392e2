"""editr1.training.checkpoint: atomic saves, corrupt/partial checkpoints skipped, pruning, RNG and
sampler state, and a bit-identical resume of a tiny training loop."""

from __future__ import annotations

import json
import logging
import random

import numpy as np
import pytest
import torch
from torch import nn

from editr1.training.checkpoint import (
    ResumableSampler,
    capture_rng,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    verify_checkpoint,
)

torch.set_num_threads(1)


def small_state(value: float) -> dict:
    return {"model": {"w": torch.full((3,), value)}, "step": int(value), "extra": {"note": "hi"}}


def test_save_load_round_trip(tmp_path):
    path = save_checkpoint(tmp_path, 7, small_state(7.0))
    assert path == tmp_path / "step-00000007"
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "state.pt"]
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["step"] == 7 and set(manifest["files"]) == {"state.pt"}
    assert len(manifest["files"]["state.pt"]["sha256"]) == 64
    state = load_checkpoint(path)
    assert torch.equal(state["model"]["w"], torch.full((3,), 7.0))
    assert state["step"] == 7 and state["extra"] == {"note": "hi"}
    assert latest_checkpoint(tmp_path) == path
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_extra_files_are_checksummed(tmp_path):
    def write_extra(staging):
        (staging / "model").mkdir()
        (staging / "model" / "config.json").write_text('{"a": 1}')

    path = save_checkpoint(tmp_path, 1, small_state(1.0), write_extra=write_extra)
    assert set(json.loads((path / "manifest.json").read_text())["files"]) == {"state.pt", "model/config.json"}
    (path / "model" / "config.json").write_text('{"a": 2}')  # same size, other bytes
    assert "sha256" in verify_checkpoint(path)


def test_corrupt_newest_falls_back_to_previous(tmp_path, caplog):
    first = save_checkpoint(tmp_path, 1, small_state(1.0))
    newest = save_checkpoint(tmp_path, 2, small_state(2.0))
    data = bytearray((newest / "state.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip one byte
    (newest / "state.pt").write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="editr1.training.checkpoint"):
        assert latest_checkpoint(tmp_path) == first
    assert "step-00000002" in caplog.text and "sha256" in caplog.text
    with pytest.raises(ValueError, match="unusable"):
        load_checkpoint(newest)


def test_truncated_missing_manifest_and_temp_dirs_are_ignored(tmp_path, caplog):
    good = save_checkpoint(tmp_path, 3, small_state(3.0))
    truncated = save_checkpoint(tmp_path, 4, small_state(4.0), keep=5)
    with (truncated / "state.pt").open("r+b") as f:
        f.truncate(10)
    no_manifest = save_checkpoint(tmp_path, 5, small_state(5.0), keep=5)
    (no_manifest / "manifest.json").unlink()
    leftover = tmp_path / ".tmp-step-00000006-abc"  # a save that crashed before its rename
    leftover.mkdir()
    (leftover / "state.pt").write_bytes(b"partial")
    with caplog.at_level(logging.WARNING, logger="editr1.training.checkpoint"):
        assert latest_checkpoint(tmp_path) == good
    assert "truncated" in caplog.text and "no manifest" in caplog.text and ".tmp-step-00000006" in caplog.text
    # the next save cleans the temp dir up
    save_checkpoint(tmp_path, 6, small_state(6.0), keep=5)
    assert not leftover.exists()
    assert latest_checkpoint(tmp_path) == tmp_path / "step-00000006"


def test_empty_or_missing_directory_has_no_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "absent") is None


def test_keep_prunes_old_checkpoints(tmp_path):
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, step, small_state(float(step)))  # keep=2 by default
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000030", "step-00000040"]
    save_checkpoint(tmp_path, 50, small_state(50.0), keep=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000050"]


def test_resaving_after_falling_back_replaces_the_abandoned_timeline(tmp_path):
    save_checkpoint(tmp_path, 1, small_state(1.0))
    newest = save_checkpoint(tmp_path, 2, small_state(2.0))
    (newest / "manifest.json").unlink()  # corrupt: the run resumes from step 1 ...
    assert latest_checkpoint(tmp_path) == tmp_path / "step-00000001"
    again = save_checkpoint(tmp_path, 2, small_state(22.0))  # ... and saves step 2 again
    assert load_checkpoint(again)["model"]["w"][0].item() == 22.0
    save_checkpoint(tmp_path, 3, small_state(3.0), keep=5)
    save_checkpoint(tmp_path, 2, small_state(-2.0), keep=5)  # a resume from 2: step 3 is stale
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000001", "step-00000002"]


def test_rng_capture_restore_round_trip():
    state = capture_rng()
    a = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    restore_rng(state)
    b = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_resumable_sampler_epochs_and_resume():
    sampler = ResumableSampler(n=5, seed=3, batch_size=2)
    assert sampler.batches_per_epoch == 3
    batches = [sampler.next_batch() for _ in range(6)]  # two epochs: sizes 2, 2, 1
    assert [len(b) for b in batches] == [2, 2, 1, 2, 2, 1]
    assert sorted(sum(batches[:3], [])) == list(range(5)) and sorted(sum(batches[3:], [])) == list(range(5))
    assert sum(batches[:3], []) != sum(batches[3:], [])  # a new permutation each epoch
    assert ResumableSampler(n=5, seed=3, batch_size=2).permutation(1).tolist() == sum(batches[3:], [])

    straight = ResumableSampler(n=5, seed=3, batch_size=2)
    expected = [straight.next_batch() for _ in range(8)]
    first = ResumableSampler(n=5, seed=3, batch_size=2)
    seen = [first.next_batch() for _ in range(4)]
    resumed = ResumableSampler(n=5, seed=3, batch_size=2)
    resumed.load_state_dict(first.state_dict())
    assert seen + [resumed.next_batch() for _ in range(4)] == expected
    with pytest.raises(ValueError, match="seed"):
        ResumableSampler(n=5, seed=4, batch_size=2).load_state_dict(first.state_dict())

    dropping = ResumableSampler(n=5, seed=3, batch_size=2, drop_last=True)
    assert [len(dropping.next_batch()) for _ in range(4)] == [2, 2, 2, 2] and dropping.epoch == 1


# --------------------------------------------------------------------------- exact resume


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)


def build(seed: int):
    torch.manual_seed(seed)
    model = MLP()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1.0 + 0.3 * s))
    sampler = ResumableSampler(n=13, seed=11, batch_size=4)
    return model, optimizer, scheduler, sampler


DATA_X = torch.linspace(-1, 1, 13 * 4).reshape(13, 4)
DATA_Y = DATA_X.sum(dim=1, keepdim=True) ** 2


def train(model, optimizer, scheduler, sampler, steps: int) -> None:
    model.train()
    for _ in range(steps):
        idx = sampler.next_batch()
        # every global RNG is used: dropout (torch), input noise (numpy), a random loss weight (python)
        x = DATA_X[idx] + torch.from_numpy(np.random.normal(0, 0.05, (len(idx), 4))).float()
        weight = 0.5 + random.random()
        loss = weight * ((model(x) - DATA_Y[idx]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def test_resume_is_bit_identical(tmp_path):
    seed_all(0)
    straight = build(seed=1)
    train(*straight, steps=10)

    seed_all(0)
    model, optimizer, scheduler, sampler = build(seed=1)
    train(model, optimizer, scheduler, sampler, steps=6)
    save_checkpoint(tmp_path, 6, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                  "scheduler": scheduler.state_dict(), "sampler": sampler.state_dict(),
                                  "rng": capture_rng(), "step": 6})
    del model, optimizer, scheduler, sampler

    seed_all(123)  # the new process's RNG is elsewhere, and its fresh model has other weights
    model, optimizer, scheduler, sampler = build(seed=99)
    state = load_checkpoint(latest_checkpoint(tmp_path))
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    sampler.load_state_dict(state["sampler"])
    restore_rng(state["rng"])  # last: building the objects drew random numbers
    assert state["step"] == 6
    train(model, optimizer, scheduler, sampler, steps=4)

    for (name, p_straight), p_resumed in zip(straight[0].named_parameters(), model.parameters()):
        assert torch.equal(p_straight, p_resumed), name
    assert scheduler.get_last_lr() == straight[2].get_last_lr()
    assert sampler.state_dict() == straight[3].state_dict()
    # and the test would notice a resume that drops the RNG state
    seed_all(0)
    model2, optimizer2, scheduler2, sampler2 = build(seed=1)
    train(model2, optimizer2, scheduler2, sampler2, steps=6)
    seed_all(5)
    train(model2, optimizer2, scheduler2, sampler2, steps=4)
    assert not all(torch.equal(a, b) for a, b in zip(straight[0].parameters(), model2.parameters()))
