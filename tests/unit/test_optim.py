"""The trainers' optimizer choice (`editr1.training.optim`): Muon takes the hidden matrices, AdamW the
rest, and the pair saves and restores its state exactly."""

from __future__ import annotations

import copy

import pytest
import torch

from editr1.training.optim import MuonWithAdamW, build_optimizer, is_hidden_matrix


class Toy(torch.nn.Module):
    """Named like a decoder: a tied embedding, one layer's projections (with a bias) and a norm."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed_tokens = torch.nn.Embedding(11, 8)
        self.q_proj = torch.nn.Linear(8, 8)
        self.up_proj = torch.nn.Linear(8, 16, bias=False)
        self.down_proj = torch.nn.Linear(16, 8, bias=False)
        self.norm = torch.nn.LayerNorm(8)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed_tokens(ids)
        h = h + self.down_proj(torch.relu(self.up_proj(self.q_proj(h))))
        return self.norm(h) @ self.embed_tokens.weight.T


def groups(model: torch.nn.Module) -> list[dict]:
    named = list(model.named_parameters())
    return [{"params": [(n, p) for n, p in named if p.dim() >= 2], "weight_decay": 0.0},
            {"params": [(n, p) for n, p in named if p.dim() < 2], "weight_decay": 0.0}]


def loss(model: torch.nn.Module, seed: int) -> torch.Tensor:
    ids = torch.randint(0, 11, (4, 6), generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.cross_entropy(model(ids[:, :-1]).reshape(-1, 11), ids[:, 1:].reshape(-1))


def step(model: torch.nn.Module, optimizer, seed: int) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss(model, seed).backward()
    optimizer.step()


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    model = Toy()
    assert [n for n, p in model.named_parameters() if is_hidden_matrix(n, p)] == \
        ["q_proj.weight", "up_proj.weight", "down_proj.weight"]
    assert not is_hidden_matrix("lm_head.weight", torch.zeros(3, 3))
    optimizer = build_optimizer("muon", groups(model), lr=0.01)
    assert isinstance(optimizer, MuonWithAdamW)
    muon = {id(p) for g in optimizer.muon.param_groups for p in g["params"]}
    adamw = {id(p) for g in optimizer.adamw.param_groups for p in g["params"]}
    assert muon == {id(model.q_proj.weight), id(model.up_proj.weight), id(model.down_proj.weight)}
    assert adamw == {id(p) for p in model.parameters()} - muon
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    step(model, optimizer, 0)
    deltas = {n: (p.detach() - before[n]) for n, p in model.named_parameters()}
    # AdamW's first step moves every element by lr (m / sqrt(v) = ±1); Muon's orthogonalised update has
    # the RMS of a typical AdamW step instead (0.2 · lr, Newton–Schulz leaves singular values near 1).
    assert torch.allclose(deltas["embed_tokens.weight"].abs(), torch.full((11, 8), 0.01), atol=1e-4)
    for name in ("q_proj.weight", "up_proj.weight", "down_proj.weight"):
        rms = float(deltas[name].pow(2).mean().sqrt())
        assert 0.1 * 0.01 < rms < 0.3 * 0.01, (name, rms)
        singular = torch.linalg.svdvals(deltas[name])  # near-orthogonal: the leading half within 2×
        assert float(singular[0] / singular[len(singular) // 2 - 1]) < 2.0, (name, singular)


def test_the_schedule_sets_every_groups_lr_and_the_state_resumes_exactly():
    model = Toy()
    optimizer = build_optimizer("muon", groups(model), lr=0.01)
    assert len(optimizer.param_groups) == 3  # Muon's matrices, AdamW's embedding, AdamW's vectors
    for seed in range(3):
        for group in optimizer.param_groups:
            group["lr"] = 0.01 * (1 - seed / 4)
        step(model, optimizer, seed)
    resumed_model = copy.deepcopy(model)
    resumed = build_optimizer("muon", groups(resumed_model), lr=0.01)
    resumed.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    for seed in range(3, 6):
        for opt in (optimizer, resumed):
            for group in opt.param_groups:
                group["lr"] = 0.005
        step(model, optimizer, seed)
        step(resumed_model, resumed, seed)
    for (name, a), b in zip(model.named_parameters(), resumed_model.parameters()):
        assert torch.equal(a, b), name


def test_muon_trains_the_toy_faster_than_it_starts():
    model = Toy()
    optimizer = build_optimizer("muon", groups(model), lr=0.02)
    first = float(loss(model, 0).detach())
    for _ in range(30):
        step(model, optimizer, 0)
    assert float(loss(model, 0).detach()) < 0.5 * first


def test_bad_choices_are_clear_errors():
    model = Toy()
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        build_optimizer("sgd", groups(model), lr=0.01)
    only_vectors = [{"params": [(n, p) for n, p in model.named_parameters() if p.dim() < 2]}]
    with pytest.raises(ValueError, match="no trainable 2-D hidden matrices"):
        build_optimizer("muon", only_vectors, lr=0.01)
    adamw = build_optimizer("adamw", groups(model), lr=0.01)
    assert isinstance(adamw, torch.optim.AdamW)
    with pytest.raises(ValueError, match="not Muon"):
        build_optimizer("muon", groups(model), lr=0.01).load_state_dict(adamw.state_dict())
