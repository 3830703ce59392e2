"""What the world knows about its images: an index from image sha256 to its scene-graph rows.

`write_batch` writes `scene_graphs.jsonl` beside each batch (one line per image: scene graph, edit
spec, instruction, and for edits the effects, facts and true quality); curation copies it to
`<storage>/curated/batches/<key>/`. `WorldTruth` loads any number of those files and answers:

    truth = WorldTruth.from_lake(Path("storage"))        # or WorldTruth.from_files([...])
    src = truth.source(source_sha, instruction)           # SourceTruth: scene, spec, instruction
    edit = truth.edit(edited_sha, source_sha, instruction)  # EditTruth: scene, spec, effects, facts

One image can sit in several rows: a source drawn in two contexts, a `no_change` edit whose bytes
are its source's. So lookups take the context (source sha and/or instruction) to pick the row;
without it an ambiguous lookup is an error, never a guess. An edit row belongs to the source row
written just before it in its file (the order `write_batch` writes them in).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from editr1.world.facts import EditFacts
from editr1.world.instructions import EditSpec
from editr1.world.scene import NO_EFFECTS, ImageEffects, Scene

SCENE_GRAPHS = "scene_graphs.jsonl"
# Where curation keeps each batch's sidecars (editr1.lake.catalog.BATCHES_DIR; not imported, so
# the world stays free of the lake's dependencies).
_LAKE_GLOB = f"curated/batches/*/{SCENE_GRAPHS}"


@dataclass(frozen=True)
class SourceTruth:
    """A source image in one context: its scene graph and the edit asked of it."""

    sha: str
    scene: Scene
    spec: EditSpec
    instruction: str

    @property
    def category(self) -> str:
        return self.spec.category


@dataclass(frozen=True)
class EditTruth:
    """A candidate edit of one context: the edited scene graph, image effects and true facts."""

    sha: str
    source_sha: str
    kind: str | None
    scene: Scene
    spec: EditSpec
    instruction: str
    effects: ImageEffects
    facts: EditFacts
    human_quality: float | None


def normalise_instruction(text: str) -> str:
    """Case- and whitespace-insensitive key of an instruction."""
    return " ".join(text.split()).casefold()


class WorldTruth:
    """Index sha256 → scene-graph rows (see module docstring)."""

    def __init__(self, rows: Iterable[dict] = ()):
        self._sources: dict[str, list[SourceTruth]] = {}
        self._edits: dict[str, list[EditTruth]] = {}
        self.add_rows(rows)

    @classmethod
    def from_files(cls, paths: Iterable[Path | str]) -> WorldTruth:
        """Load every `scene_graphs.jsonl` in `paths` (later files add to earlier ones)."""
        truth = cls()
        for path in paths:
            path = Path(path)
            with path.open(encoding="utf-8") as fh:
                rows = [json.loads(line) for line in fh if line.strip()]
            try:
                truth.add_rows(rows)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}: not a world scene-graph file: {exc}") from exc
        return truth

    @classmethod
    def from_lake(cls, storage: Path | str) -> WorldTruth:
        """Load `<storage>/curated/batches/*/scene_graphs.jsonl`; empty when the lake has none
        (batches that did not come from the world carry no scene graphs)."""
        return cls.from_files(sorted(Path(storage).glob(_LAKE_GLOB)))

    def add_rows(self, rows: Iterable[dict]) -> None:
        """Index rows in file order: an edit row belongs to the last source row before it."""
        current: SourceTruth | None = None
        for row in rows:
            scene, spec = Scene.from_dict(row["scene"]), EditSpec.from_dict(row["spec"])
            if row["role"] == "source":
                current = SourceTruth(row["sha256"], scene, spec, row["instruction"])
                self._sources.setdefault(current.sha, []).append(current)
            elif row["role"] == "edit":
                if current is None or normalise_instruction(current.instruction) != normalise_instruction(
                    row["instruction"]
                ):
                    raise ValueError(f"edit row {row['sha256'][:12]} does not follow its source row")
                effects = NO_EFFECTS if row.get("effects") is None else ImageEffects.from_dict(row["effects"])
                edit = EditTruth(
                    sha=row["sha256"], source_sha=current.sha, kind=row.get("kind"), scene=scene, spec=spec,
                    instruction=row["instruction"], effects=effects, facts=EditFacts.from_dict(row["facts"]),
                    human_quality=row.get("human_quality"),
                )
                self._edits.setdefault(edit.sha, []).append(edit)
            else:
                raise ValueError(f"unknown role {row['role']!r}")

    def __len__(self) -> int:
        """Number of distinct images known."""
        return len(self._sources.keys() | self._edits.keys())

    def __contains__(self, sha: object) -> bool:
        return sha in self._sources or sha in self._edits

    def source_shas(self) -> list[str]:
        return sorted(self._sources)

    def edit_shas(self) -> list[str]:
        return sorted(self._edits)

    def sources(self) -> list[SourceTruth]:
        """Every (source, context) row, in load order of the shas."""
        return [s for rows in self._sources.values() for s in rows]

    def edits(self) -> list[EditTruth]:
        """Every (edit, context) row."""
        return [e for rows in self._edits.values() for e in rows]

    def source(self, sha: str, instruction: str | None = None) -> SourceTruth:
        """The source image `sha` in the context of `instruction` (needed when the image is the
        source of several contexts). KeyError when unknown, ValueError when ambiguous."""
        rows = self._sources.get(sha)
        if not rows:
            raise KeyError(f"source image {sha[:12]}… is not in the world truth")
        if instruction is not None:
            key = normalise_instruction(instruction)
            rows = [r for r in rows if normalise_instruction(r.instruction) == key]
            if not rows:
                raise KeyError(f"source image {sha[:12]}… was never asked {instruction!r}")
        return _one(rows, lambda r: (r.scene, r.spec), f"source image {sha[:12]}…")

    def edit(self, sha: str, source_sha: str | None = None, instruction: str | None = None) -> EditTruth:
        """The edited image `sha` as a candidate of the context (`source_sha`, `instruction`).

        KeyError when the image is unknown (an editor's rollout is never in the truth) or was
        not an edit of that context; ValueError when several contexts fit and none was given."""
        rows = self._edits.get(sha)
        if not rows:
            raise KeyError(f"edited image {sha[:12]}… is not in the world truth (only edits written by "
                           "write_batch are; an editor's rollout needs the renderer-based path)")
        if source_sha is not None:
            rows = [r for r in rows if r.source_sha == source_sha]
        if instruction is not None:
            key = normalise_instruction(instruction)
            rows = [r for r in rows if normalise_instruction(r.instruction) == key]
        if not rows:
            raise KeyError(f"edited image {sha[:12]}… is in the world truth, but not as an edit of "
                           f"source {str(source_sha)[:12]}… with instruction {instruction!r}")
        return _one(rows, lambda r: (r.scene, r.spec, r.effects, r.facts), f"edited image {sha[:12]}…")

    def edit_kind(self, sha: str, source_sha: str, instruction: str) -> str | None:
        """The candidate kind of the edited image `sha` in the context (`source_sha`, `instruction`)
        ("wrong_object"), or None when the truth does not know it there, or only ambiguously."""
        try:
            return self.edit(sha, source_sha, instruction).kind
        except (KeyError, ValueError):
            return None


def _one(rows: Sequence, key, what: str):
    """The row when all candidates agree (the same image in the same context, seen twice)."""
    if any(key(r) != key(rows[0]) for r in rows[1:]):
        raise ValueError(f"{what} belongs to {len(rows)} different contexts; pass the instruction "
                         "(and source sha) to choose one")
    return rows[0]
