"""Vision pre-training of a tiny RRM on the synthetic world's scene graphs: the stand-in for the
pre-trained vision tower every real VLM comes with.

    scenes = world_scenes(truth, rows)                       # image sha → Scene, train rows only
    pretrainer = VisionPretrainer(model, processor, images, scenes, seed=0, lr=3e-3, batch_size=64)
    for _ in range(steps):
        pretrainer.step()
    pretrainer.accuracy(val_scenes)                          # {"color": …, "kind": …, "background": …}

Why. A randomly initialised tiny RRM learns the format of a judgement within a few hundred SFT
steps but not the images: its descriptions of the shapes stay near the base rate, because the only
signal reaching the vision tower is the language loss through attention that has not yet learned
where to look (README, "Training the RRM"). Trained directly, the same tower tells which colour
and kind of shape sits in each grid cell almost perfectly after ~400 steps of 64 images (~70 s on
one core). A real Qwen2.5-VL has that from its own pre-training; this module gives the tiny one
the same head start and nothing else: only the vision tower and its merger are updated, through a
linear head that is thrown away afterwards.

Targets, per image: for each cell of the scene's grid, the colour of the shape centred there (or
"none") and its kind (or "none"); and the background colour. The head reads all image tokens of
one image concatenated, so it can only succeed if each token keeps what is where.

With a processor that pairs frames (`editr1.models.processor.with_first_frame`: the edited image
gets the source as its first frame), the tower also sees (source, edited) pairs and learns, per
token, the cell of both frames: the edited image's colour and kind as above, and the source's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from editr1.models.processor import RRMProcessor, with_first_frame
from editr1.training import parallel
from editr1.world.scene import Scene
from editr1.world.truth import WorldTruth

NONE = "none"


@dataclass(frozen=True)
class SceneVocab:
    """The label sets of a collection of scenes (sorted, "none" first for cells)."""

    colors: tuple[str, ...]
    kinds: tuple[str, ...]
    backgrounds: tuple[str, ...]
    grid_size: int

    @classmethod
    def of(cls, scenes: Sequence[Scene]) -> SceneVocab:
        if not scenes:
            raise ValueError("no scenes to build vision targets from")
        grids = {s.grid_size for s in scenes}
        if len(grids) != 1:
            raise ValueError(f"scenes of several grid sizes {sorted(grids)}")
        colors = sorted({sh.color for s in scenes for sh in s.shapes})
        kinds = sorted({sh.kind for s in scenes for sh in s.shapes})
        return cls((NONE, *colors), (NONE, *kinds), tuple(sorted({s.background for s in scenes})), grids.pop())

    @property
    def cells(self) -> int:
        return self.grid_size**2

    @property
    def outputs(self) -> int:
        return self.cells * (len(self.colors) + len(self.kinds)) + len(self.backgrounds)

    def targets(self, scene: Scene) -> tuple[list[int], list[int], int]:
        """(colour index per cell, kind index per cell, background index); cells row-major. A shape
        counts in the cell nearest its centre (a shape stopped mid-move rounds to a cell)."""
        colors, kinds = [0] * self.cells, [0] * self.cells
        for shape in scene.shapes:
            row = min(self.grid_size - 1, max(0, round(shape.row)))
            col = min(self.grid_size - 1, max(0, round(shape.col)))
            colors[row * self.grid_size + col] = self.colors.index(shape.color)
            kinds[row * self.grid_size + col] = self.kinds.index(shape.kind)
        return colors, kinds, self.backgrounds.index(scene.background)


def world_scenes(truth: WorldTruth, rows: Sequence[dict[str, Any]]) -> dict[str, Scene]:
    """Scene graph of every source and edited image of coldstart ``rows`` that the world knows
    (image sha → Scene). Images the world has no row for (real data) are left out."""
    scenes: dict[str, Scene] = {}
    for row in rows:
        if row["source_sha"] not in scenes:
            try:
                scenes[row["source_sha"]] = truth.source(row["source_sha"], row["instruction"]).scene
            except KeyError:
                continue
        if row["edited_sha"] not in scenes:
            try:
                scenes[row["edited_sha"]] = truth.edit(row["edited_sha"], row["source_sha"], row["instruction"]).scene
            except KeyError:
                continue
    return scenes


class VisionPretrainer:
    """Trains ``model.model.visual`` (patch embedding, blocks, merger) on scene-graph targets."""

    def __init__(self, model: torch.nn.Module, processor: RRMProcessor, images: Callable[[str], Image.Image],
                 scenes: dict[str, Scene], *, seed: int, lr: float, batch_size: int,
                 pairs: Sequence[tuple[str, str]] = ()):
        """``pairs``: (source sha, edited sha) of the edits, used when ``processor.paired_frames``."""
        self.visual = model.model.visual
        self.processor = processor
        self.images = images
        self.shas = sorted(scenes)
        self.paired = bool(processor.paired_frames)
        # Items are (first frame, second frame): every image alone, and with paired frames every edit.
        self.items = [(s, s) for s in self.shas]
        if self.paired:
            self.items += sorted({(a, b) for a, b in pairs if a in scenes and b in scenes and a != b})
        self.vocab = SceneVocab.of([scenes[s] for s in self.shas])
        targets = {s: self.vocab.targets(scenes[s]) for s in self.shas}
        self.colors = torch.tensor([targets[b][0] for _, b in self.items])
        self.kinds = torch.tensor([targets[b][1] for _, b in self.items])
        self.backgrounds = torch.tensor([targets[b][2] for _, b in self.items])
        self.first_colors = torch.tensor([targets[a][0] for a, _ in self.items])
        self.first_kinds = torch.tensor([targets[a][1] for a, _ in self.items])
        self.index = {item: i for i, item in enumerate(self.items)}
        self.batch_size = min(batch_size, len(self.items))
        self.generator = torch.Generator().manual_seed(seed)
        device = next(self.visual.parameters()).device
        with torch.no_grad():
            tokens, hidden = self._tokens(self.items[:1]).shape[1:]
        v = self.vocab
        # One image token per grid cell: a head shared by all tokens reads each token alone, so every
        # token has to hold its own cell — what is there and where it is (row, column; the tower learns
        # that from its rotary positions and the image borders, 99% of tokens on val after 600 steps).
        # Otherwise one head reads all tokens of an image concatenated.
        self.per_token = tokens == v.cells
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if self.per_token:
                first = len(v.colors) + len(v.kinds) if self.paired else 0
                self.head = torch.nn.Linear(hidden, len(v.colors) + len(v.kinds) + 2 * v.grid_size + first).to(device)
                self.background_head = torch.nn.Linear(hidden, len(v.backgrounds)).to(device)
            else:
                self.head = torch.nn.Linear(tokens * hidden, v.outputs).to(device)
                self.background_head = None
        heads = list(self.head.parameters()) + (list(self.background_head.parameters()) if self.per_token else [])
        params = [p for p in self.visual.parameters() if p.requires_grad] + heads
        self.optimizer = torch.optim.AdamW(params, lr=lr)
        cells = torch.arange(v.cells)
        self.rows, self.cols = cells // v.grid_size, cells % v.grid_size

    def _tokens(self, items: Sequence[tuple[str, str]]) -> Tensor:
        """The vision tower's tokens of each item's image (row-major): [len(items), tokens, hidden]."""
        image_processor = self.processor.image_processor
        batch = image_processor([self.images(b) for _, b in items], return_tensors="pt")
        pixels = batch["pixel_values"]
        if self.paired:
            first = image_processor([self.images(a) for a, _ in items], return_tensors="pt")["pixel_values"]
            pixels = with_first_frame(pixels, first, image_processor.temporal_patch_size, image_processor.patch_size)
        device = next(self.visual.parameters()).device
        out = self.visual(pixels.to(device), grid_thw=batch["image_grid_thw"].to(device)).pooler_output
        return out.reshape(len(items), -1, out.shape[-1])

    def _logits(self, items: Sequence[tuple[str, str]]) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """(colour [n, cells, C], kind [n, cells, K], background [n, B], position [n, cells, 2·grid] or
        None); with paired frames the position part is followed by the first frame's colour and kind."""
        v = self.vocab
        tokens = self._tokens(items)
        if self.per_token:
            out = self.head(tokens)
            n_color, n_kind = len(v.colors), len(v.kinds)
            return (out[..., :n_color], out[..., n_color:n_color + n_kind],
                    self.background_head(tokens.mean(1)), out[..., n_color + n_kind:])
        out = self.head(tokens.flatten(1))
        n_color, n_kind = v.cells * len(v.colors), v.cells * len(v.kinds)
        return (out[:, :n_color].reshape(len(items), v.cells, len(v.colors)),
                out[:, n_color:n_color + n_kind].reshape(len(items), v.cells, len(v.kinds)),
                out[:, n_color + n_kind:], None)

    def loss(self, items: Sequence[tuple[str, str] | str]) -> Tensor:
        """Cross-entropy of cell colours + cell kinds + background (each a mean), for ``items`` ((first
        frame, image) pairs, or image shas alone); with one token per cell also of each token's row and
        column, and with paired frames of the first frame's cell colours and kinds."""
        items = [item if isinstance(item, tuple) else (item, item) for item in items]
        idx = torch.tensor([self.index[item] for item in items])
        colors, kinds, background, position = self._logits(items)
        device = colors.device
        ce = torch.nn.functional.cross_entropy
        loss = (ce(colors.flatten(0, 1), self.colors[idx].flatten().to(device))
                + ce(kinds.flatten(0, 1), self.kinds[idx].flatten().to(device))
                + ce(background, self.backgrounds[idx].to(device)))
        if position is not None:
            grid = self.vocab.grid_size
            rows, cols = self.rows.repeat(len(items)).to(device), self.cols.repeat(len(items)).to(device)
            loss = (loss + ce(position[..., :grid].flatten(0, 1), rows)
                    + ce(position[..., grid:2 * grid].flatten(0, 1), cols))
            if self.paired:
                first = position[..., 2 * grid:]
                n_color = len(self.vocab.colors)
                loss = (loss + ce(first[..., :n_color].flatten(0, 1), self.first_colors[idx].flatten().to(device))
                        + ce(first[..., n_color:].flatten(0, 1), self.first_kinds[idx].flatten().to(device)))
        return loss

    def step(self) -> float:
        """One AdamW step on a random batch of images (seeded); returns the loss.

        Data parallel when run in every rank of `editr1.training.parallel.launch`: all ranks draw the
        same batch, each takes its share, and the share-weighted gradients are summed, so N workers
        take the one-process step (every image has the same number of cells, so the shares' means
        weighted by their sizes are the batch mean).
        """
        picks = torch.randperm(len(self.items), generator=self.generator)[: self.batch_size].tolist()
        mine = parallel.shard(picks)
        self.optimizer.zero_grad(set_to_none=True)
        loss_value = torch.zeros(1, dtype=torch.float64)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if mine:
            loss = self.loss([self.items[i] for i in mine]) * (len(mine) / len(picks))
            loss.backward()
            loss_value += float(loss.detach())
        parallel.all_reduce_gradients(params, [loss_value])
        self.optimizer.step()
        return float(loss_value)

    @torch.no_grad()
    def accuracy(self, scenes: dict[str, Scene]) -> dict[str, float]:
        """On other images (e.g. val): the share of cells whose colour / kind, and of images whose
        background, the head gets right. Images with a label outside the training vocabulary are skipped."""
        v = self.vocab
        known = {s: sc for s, sc in scenes.items()
                 if sc.grid_size == v.grid_size and sc.background in v.backgrounds
                 and all(sh.color in v.colors and sh.kind in v.kinds for sh in sc.shapes)}
        if not known:
            return {}
        shas = sorted(known)
        targets = [v.targets(known[s]) for s in shas]
        colors, kinds, background, position = self._logits([(s, s) for s in shas])
        extra = {}
        if position is not None:  # tokens whose row and column are both read right
            grid = v.grid_size
            right = ((position[..., :grid].argmax(-1).cpu() == self.rows)
                     & (position[..., grid:2 * grid].argmax(-1).cpu() == self.cols))
            extra["position"] = float(right.float().mean())
        return {**extra,
                "color": float((colors.argmax(-1).cpu() == torch.tensor([t[0] for t in targets])).float().mean()),
                "kind": float((kinds.argmax(-1).cpu() == torch.tensor([t[1] for t in targets])).float().mean()),
                "background": float((background.argmax(-1).cpu() == torch.tensor([t[2] for t in targets])).float().mean()),
                "images": float(len(shas))}
