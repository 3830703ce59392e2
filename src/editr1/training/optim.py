"""The trainers' optimizer: AdamW, or Muon on the hidden weight matrices with AdamW on the rest.

    build_optimizer("muon", named_groups, lr) -> MuonWithAdamW
    build_optimizer("adamw", named_groups, lr) -> torch.optim.AdamW

``named_groups`` are AdamW-style parameter groups whose ``params`` are (name, parameter) pairs. Muon
(``torch.optim.Muon``) orthogonalises each 2-D hidden matrix's momentum (Newton–Schulz) before the
step, with the update's RMS matched to AdamW's (``adjust_lr_fn="match_rms_adamw"``), so the same
learning rate and schedule apply; the token embedding, a separate output head and every vector or
higher-rank tensor (norms, biases, the patch embedding) stay with AdamW, as Muon's authors prescribe.
The pair behaves as one optimizer for the trainer: ``param_groups`` (Muon's first, the schedule sets
each group's ``lr``), ``zero_grad``, ``step``, and one ``state_dict`` that a checkpoint saves and a
resume restores exactly.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

OPTIMIZERS = ("adamw", "muon")


def is_hidden_matrix(name: str, param: torch.Tensor) -> bool:
    """Muon's share: a 2-D weight that is neither the token embedding nor the output head."""
    return param.dim() == 2 and "embed" not in name and "lm_head" not in name


class MuonWithAdamW:
    """Muon on the hidden matrices, AdamW on everything else; one optimizer to the trainer."""

    def __init__(self, named_groups: Iterable[dict[str, Any]], lr: float) -> None:
        muon_groups, adamw_groups = [], []
        for group in named_groups:
            options = {k: v for k, v in group.items() if k != "params"}
            pairs = list(group["params"])
            hidden = [p for n, p in pairs if is_hidden_matrix(n, p)]
            rest = [p for n, p in pairs if not is_hidden_matrix(n, p)]
            if hidden:
                muon_groups.append({**options, "params": hidden})
            if rest:
                adamw_groups.append({**options, "params": rest})
        if not muon_groups:
            raise ValueError("optimizer muon: no trainable 2-D hidden matrices (use optimizer adamw)")
        self.muon = torch.optim.Muon(muon_groups, lr=lr, weight_decay=0.0, adjust_lr_fn="match_rms_adamw")
        self.adamw = torch.optim.AdamW(adamw_groups, lr=lr) if adamw_groups else None

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.muon.param_groups + (self.adamw.param_groups if self.adamw else [])

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self._parts():
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for optimizer in self._parts():
            optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict() if self.adamw else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "muon" not in state:
            raise ValueError("checkpoint optimizer state is not Muon + AdamW (was the run started with adamw?)")
        self.muon.load_state_dict(state["muon"])
        if self.adamw is not None:
            self.adamw.load_state_dict(state["adamw"])

    def _parts(self) -> list[torch.optim.Optimizer]:
        return [self.muon] + ([self.adamw] if self.adamw else [])


def run_progress(step: int, train_seconds: float, max_steps: int, max_seconds: float) -> float:
    """How far a run is, in [0, 1]: max(step / max_steps, train_seconds / max_seconds), each term only
    when its limit is set (> 0) — what the trainers' lr schedules decay with."""
    progress = 0.0
    if max_steps > 0:
        progress = max(progress, step / max_steps)
    if max_seconds > 0:
        progress = max(progress, train_seconds / max_seconds)
    return min(1.0, progress)


def build_optimizer(kind: str, named_groups: list[dict[str, Any]], lr: float) -> Any:
    """``kind`` 'adamw' or 'muon' over AdamW-style groups of (name, parameter) pairs (see the module doc)."""
    if kind == "adamw":
        return torch.optim.AdamW([{**g, "params": [p for _, p in g["params"]]} for g in named_groups], lr=lr)
    if kind == "muon":
        return MuonWithAdamW(named_groups, lr)
    raise ValueError(f"unknown optimizer {kind!r}; choose from {', '.join(OPTIMIZERS)}")
