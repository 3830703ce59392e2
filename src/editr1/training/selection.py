"""Which weights the RRM trainers hand on: the best of a few val evaluations, or the mean of the last steps.

    best, average = BestWeights(points=4), TailAverage(tail=0.4)
    average.update(progress_after, weights)                   # after every step (from the tail's start)
    if best.due(progress_before, progress_after):             # a point of the budget was crossed
        best.offer(evaluate(), weights)                        # {"step": …, "expected_acc_no_ties": …}
    ...
    average.apply(model); best.offer(evaluate(), weights)      # the end: the average is the last candidate
    best.restore(model)                                        # the best evaluation's weights, before saving

GCPO and its same-compute control both evaluate at ``points`` evenly spaced points of their run's
budget (progress = max(step / max_steps, seconds / max_seconds), `editr1.training.optim.run_progress`):
after 1/points, 2/points, … of it, the last at its end, and, with ``start``, before the first step
(the start model — the SFT model — is then a candidate too, so a run that improves nothing on val
returns its start). Both score the same val pairs (`val_pairs`), so the selection is the same
procedure on both sides of the comparison; the test split is never looked at.

Tail averaging (`TailAverage`): the uniform mean of the weights after every step of the run's last
``tail`` share (progress > 1 − tail) — Polyak / SWA-style averaging of the iterates, which RL steps
make noisy (GCPO's checkpoints 20 steps apart differ by 3–5 points on test; README: "Run L"). With
selection on, the average is the end's candidate in place of the last weights; without it, the
average is the run's model.

The kept and averaged weights are part of the trainers' checkpoints (`state_dict`), so a resumed run
ends exactly where an uninterrupted one does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from editr1.lake.catalog import curated_pairs

METRIC = "expected_acc_no_ties"

log = logging.getLogger(__name__)


def val_pairs(storage: Path, checklists: Mapping[str, Any], limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` non-tie val pairs whose context has a checklist (curated order): the pairs
    the trainers evaluate on. Ties are left out: they carry no ordering to select on."""
    if limit <= 0:
        return []
    pairs = curated_pairs(storage, "val", include_ties=False).to_pylist()
    return [p for p in pairs if p["context_id"] in checklists][:limit]


class BestWeights:
    """The weights of the best val evaluation so far (strictly better replaces: ties keep the earlier)."""

    def __init__(self, points: int, start: bool = False) -> None:
        if points < 0:
            raise ValueError(f"selection points must be >= 0, got {points}")
        self.points = points
        self.start = start and points > 0
        self.weights: dict[str, torch.Tensor] | None = None
        self.entry: dict[str, Any] | None = None  # the kept weights' evaluation
        self.candidates: list[dict[str, float]] = []

    @property
    def active(self) -> bool:
        return self.points > 0

    @property
    def step(self) -> int | None:
        return None if self.entry is None else self.entry["step"]

    @property
    def value(self) -> float:
        return -math.inf if self.entry is None else float(self.entry[METRIC])

    def due(self, before: float, after: float) -> bool:
        """Whether a run that moved from progress ``before`` to ``after`` (in [0, 1]) crossed one of the points."""
        return self.active and math.floor(after * self.points + 1e-9) > math.floor(before * self.points + 1e-9)

    def offer(self, entry: Mapping[str, Any], weights: Mapping[str, torch.Tensor]) -> bool:
        """Keep a copy of ``weights`` when the evaluation ``entry`` (its "step" and val accuracy
        `METRIC`, None or NaN when nothing parsed) beats the best so far."""
        if not self.active:
            return False
        value = entry.get(METRIC)
        value = float("nan") if value is None else float(value)
        self.candidates.append({"step": entry["step"], "value": value})
        if not value > self.value:  # NaN never wins
            return False
        self.entry = dict(entry)
        self.weights = {name: tensor.detach().to("cpu", copy=True) for name, tensor in weights.items()}
        return True

    def restore(self, model: torch.nn.Module) -> bool:
        """Load the kept weights into ``model`` (its other parameters untouched); False when none are kept."""
        return _load_into(model, self.weights, "kept")

    def report(self) -> dict[str, Any]:
        """The selected step and val accuracy, and every candidate's (for metrics.json)."""
        return {"points": self.points, "start": self.start, "selected_step": self.step,
                "selected_value": None if self.step is None else self.value, "candidates": list(self.candidates)}

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights, "entry": self.entry, "candidates": list(self.candidates)}

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        if state is None:  # a checkpoint from a run without selection
            return
        self.weights, self.entry = state["weights"], state["entry"]
        self.candidates = list(state["candidates"])


class TailAverage:
    """The running uniform mean of the weights over the run's last ``tail`` share (0 = off)."""

    def __init__(self, tail: float) -> None:
        if not 0.0 <= tail <= 1.0:
            raise ValueError(f"the averaged tail must be in [0, 1], got {tail}")
        self.tail = tail
        self.count = 0
        self.weights: dict[str, torch.Tensor] | None = None

    @property
    def active(self) -> bool:
        return self.tail > 0

    def update(self, progress: float, weights: Mapping[str, torch.Tensor]) -> bool:
        """Fold the weights after a step that brought the run to ``progress`` into the mean, once the
        tail has begun; True when they were folded in. Other than floating-point tensors are kept as last seen."""
        if not self.active or progress <= 1.0 - self.tail + 1e-12:
            return False
        self.count += 1
        if self.weights is None:
            self.weights = {name: t.detach().clone() for name, t in weights.items()}  # on the weights' device
            return True
        for name, tensor in weights.items():
            mean = self.weights[name]
            if mean.is_floating_point():
                mean.add_(tensor.detach().to(mean.device, mean.dtype) - mean, alpha=1.0 / self.count)
            else:
                mean.copy_(tensor.detach())
        return True

    def apply(self, model: torch.nn.Module) -> bool:
        """Load the mean into ``model`` (its other parameters untouched); False when nothing was averaged."""
        return _load_into(model, self.weights, "averaged")

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "weights": self.weights}

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        if state is None:  # a checkpoint from a run without averaging
            return
        self.count, self.weights = state["count"], state["weights"]


def _load_into(model: torch.nn.Module, weights: Mapping[str, torch.Tensor] | None, what: str) -> bool:
    """Load ``weights`` (a subset of the model's names) into ``model``; False when there are none."""
    if weights is None:
        return False
    _, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected:
        raise ValueError(f"{what} weights do not fit the model: unexpected {unexpected[:3]}")
    return True


def hand_on(model: torch.nn.Module, best: BestWeights, average: TailAverage, evaluations: list[dict[str, Any]],
            step: int, evaluate: Callable[[], dict[str, Any]], select: Callable[[dict[str, Any]], None]
            ) -> dict[str, float]:
    """The end of a run, shared by the trainers: load the tail average into ``model`` (when on), evaluate
    the end unless ``evaluations`` (the run's val evaluations, which ``select`` appends to and offers to
    ``best``) already end at ``step``, then load the selected weights (when on). Returns the numbers of
    the evaluation of the weights ``model`` now holds, with ``selected_step`` / ``averaged_steps``."""
    averaged = average.apply(model)  # the run ends on its tail average
    if averaged or not evaluations or evaluations[-1]["step"] != step:
        select({**evaluate(), **({"averaged_steps": average.count} if averaged else {})})
    chosen = evaluations[-1]
    if best.restore(model):  # the selected weights are the run's model
        chosen = best.entry
        log.info("selected the weights of step %s (val %.3f) of %d", best.step, best.value, step)
    final = {k: float(v) for k, v in chosen.items() if isinstance(v, (int, float))}
    if best.active:
        final["selected_step"] = float(best.step) if best.step is not None else math.nan
    if averaged:
        final["averaged_steps"] = float(average.count)
    return final
