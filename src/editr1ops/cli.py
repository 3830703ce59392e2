"""The `editr1` command line. Run `editr1 --help` for the command list.

    editr1 world make --out B --pairs 300 --seed 7      # a preference batch from the synthetic world
    editr1 batch add B [--json]                          # the `curate` stage for one batch
    editr1 batch list | editr1 batch show BATCH_ID
    editr1 curate --incoming storage/incoming            # add every batch found there (dvc stage)
    editr1 principles | editr1 coldstart                 # checklists, then teacher trajectories
    editr1 demo [--storage DIR] [--profile full] [--no-train] [--json PATH]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from editr1.config import CurateConfig, load_config, storage_root

app = typer.Typer(help="Edit-R1: train image editors with a reasoning reward model.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
world_app = typer.Typer(help="The synthetic shapes world.", no_args_is_help=True)
batch_app = typer.Typer(help="Preference batches in the lake (the `curate` stage).", no_args_is_help=True)
app.add_typer(world_app, name="world")
app.add_typer(batch_app, name="batch")
eval_app = typer.Typer(help="The `evaluate` stage.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")
rrm_app = typer.Typer(help="The reward-model registry (MLflow): promotion and aliases.", no_args_is_help=True)
app.add_typer(rrm_app, name="rrm")


@app.callback()
def _quiet_model_loading() -> None:
    """Model loads print no per-file progress bars: a command's output is its result (the variable
    reaches the processes a command spawns: data-parallel SFT ranks, the GCPO control)."""
    from transformers.utils import logging as hf_logging

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    hf_logging.disable_progress_bar()

ModelOpt = Annotated[str, typer.Option("--model", help="A save_rrm folder, models:/edit-rrm@champion, runs:/…, a hub id, "
                                                        "or 'tiny'.")]

console = Console()

StorageOpt = Annotated[Path | None, typer.Option("--storage", help="Lake root (default: $EDITR1_STORAGE or storage/).")]
ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read stage settings from.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def fail(message: str) -> None:
    """One clear line on stderr, exit status 2."""
    sys.stderr.write(f"error: {' '.join(str(message).split())}\n")
    raise typer.Exit(2)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


@world_app.command("make")
def world_make(out: Annotated[Path, typer.Option(help="Folder to write the batch into.")],
               pairs: Annotated[int, typer.Option(help="Number of distinct pairs.")] = 300,
               seed: Annotated[int, typer.Option(help="Random seed (same seed → identical bytes).")] = 0,
               batch_id: Annotated[str | None, typer.Option(help="Batch id (default world-s<seed>-n<pairs>).")] = None,
               params: ParamsOpt = Path("params.yaml"), as_json: JsonFlag = False) -> None:
    """Writes a preference batch in the data team's format (pairs.jsonl + images/ + scene graphs)."""
    from editr1.world import WorldConfig, write_batch

    if pairs < 1:
        fail("--pairs must be at least 1")
    summary = write_batch(out, pairs, seed, load_config(WorldConfig, "world", params), batch_id=batch_id)
    if as_json:
        print_json(summary)
    else:
        console.print(f"wrote {summary['pairs']} pairs ({summary['rows']} judgements) to {out}")


@world_app.command("editing")
def world_editing(out: Annotated[Path, typer.Option(help="Folder to write the editing dataset into.")],
                  n: Annotated[int, typer.Option(help="Number of (source, instruction, target) examples.")] = 1000,
                  seed: int = 0, params: ParamsOpt = Path("params.yaml"), as_json: JsonFlag = False) -> None:
    """Writes the editor's supervised dataset (targets over-edit at the configured rate)."""
    from editr1.world import WorldConfig, write_editing_dataset

    summary = write_editing_dataset(out, n, seed, load_config(WorldConfig, "world", params))
    print_json(summary) if as_json else console.print(f"wrote {n} editing examples to {out}")


def _print_add(summary: dict[str, Any]) -> None:
    if summary["already_ingested"]:
        console.print(f"batch {summary['batch_id']} was already ingested (same pairs file): added 0")
        return
    table = Table(title=f"batch {summary['batch_id']} → {summary['batch_key']}", show_header=False)
    for key in ("rows", "added", "votes", "duplicates", "conflicts", "quarantined"):
        table.add_row(key, str(summary[key]))
    for split, count in summary["splits"].items():
        table.add_row(f"  new pairs in {split}", str(count))
    for reason, count in summary["quarantined_by_reason"].items():
        table.add_row(f"  quarantined: {reason}", str(count))
    table.add_row("seconds", f"{summary['seconds']:.2f}")
    console.print(table)


@batch_app.command("add")
def batch_add(source: Annotated[str, typer.Argument(help="Batch folder or s3://bucket/prefix.")],
              storage: StorageOpt = None, params: ParamsOpt = Path("params.yaml"),
              batch_id: Annotated[str | None, typer.Option(help="Override the batch id.")] = None,
              as_json: JsonFlag = False) -> None:
    """Validates, deduplicates, splits and stores one preference batch (the `curate` stage)."""
    from editr1.curation import add_batch
    from editr1.curation.source import BatchError

    try:
        cfg = load_config(CurateConfig, "curate", params)
        summary = add_batch(source, storage_root(storage), cfg, batch_id=batch_id).to_dict()
    except (BatchError, ValueError, FileNotFoundError) as err:
        fail(str(err))
    print_json(summary) if as_json else _print_add(summary)


@batch_app.command("list")
def batch_list(storage: StorageOpt = None, as_json: JsonFlag = False) -> None:
    """Lists the batches in the lake."""
    from editr1.curation import list_batches

    batches = list_batches(storage_root(storage))
    if as_json:
        print_json(batches)
        return
    table = Table("batch_id", "key", "added_at", "rows", "added", "quarantined")
    for m in batches:
        table.add_row(m["batch_id"], m["batch_key"], m.get("added_at", ""), str(m["rows"]), str(m["added"]),
                      str(m["quarantined"]))
    console.print(table)


@batch_app.command("show")
def batch_show(batch: Annotated[str, typer.Argument(help="Batch id or key.")], storage: StorageOpt = None,
               as_json: JsonFlag = False) -> None:
    """Shows one batch: manifest, split and label counts, quarantine reasons."""
    from editr1.curation import show_batch

    try:
        info = show_batch(storage_root(storage), batch)
    except KeyError as err:
        fail(str(err.args[0]))
    if as_json:
        print_json(info)
        return
    table = Table(title=f"batch {info['batch_id']}", show_header=False)
    for key in ("batch_key", "source", "added_at", "rows", "added", "votes", "duplicates", "conflicts", "quarantined"):
        table.add_row(key, str(info.get(key)))
    for section, values in info["current"].items():
        table.add_row(section, json.dumps(values, default=str))
    console.print(table)


@app.command("curate")
def curate(incoming: Annotated[Path, typer.Option(help="Folder holding batch folders.")] = Path("storage/incoming"),
           storage: StorageOpt = None, params: ParamsOpt = Path("params.yaml"),
           summary_json: Annotated[Path | None, typer.Option("--json", help="Write the summaries here.")] = None) -> None:
    """Adds every batch found under --incoming, in path order (the dvc `curate` stage)."""
    from editr1.curation import add_batch, find_batches

    cfg = load_config(CurateConfig, "curate", params)
    batches = find_batches(incoming)
    if not batches:
        fail(f"no batches (pairs.jsonl / pairs.parquet) under {incoming}")
    results = [add_batch(b, storage_root(storage), cfg).to_dict() for b in batches]
    for r in results:
        _print_add(r)
    if summary_json:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        by_key = {r["batch_key"]: r for r in results}
        summary_json.write_text(json.dumps(by_key, indent=2, sort_keys=True) + "\n")


def _stage_inputs(storage: Path | None, params: Path):
    from editr1.config import CurateConfig, TeacherConfig, WorldConfig
    from editr1.lake.objects import open_object_store
    from editr1.teachers.factory import build_teacher

    root = storage_root(storage)
    curate_cfg = load_config(CurateConfig, "curate", params)
    teacher = build_teacher(load_config(TeacherConfig, "teacher", params), root, load_config(WorldConfig, "world", params))
    return root, teacher, open_object_store(curate_cfg.object_store, root, curate_cfg.s3_endpoint_url or None)


@app.command("principles")
def principles(storage: StorageOpt = None, params: ParamsOpt = Path("params.yaml"),
               summary_json: Annotated[Path | None, typer.Option("--json", help="Write the summary here.")] = None) -> None:
    """The `principles` stage: a checklist per curated context (rrm/principles.parquet)."""
    from editr1.coldstart import run_principles
    from editr1.config import PrinciplesConfig

    try:
        root, teacher, store = _stage_inputs(storage, params)
        summary = run_principles(load_config(PrinciplesConfig, "principles", params), root, teacher, store,
                                 root / "rrm" / "principles.parquet")
    except ValueError as err:
        fail(str(err))
    _emit(summary, summary_json)


@app.command("coldstart")
def coldstart(storage: StorageOpt = None, params: ParamsOpt = Path("params.yaml"),
              summary_json: Annotated[Path | None, typer.Option("--json", help="Write the summary here.")] = None) -> None:
    """The `coldstart` stage: verified teacher trajectories (rrm/trajectories.parquet)."""
    from editr1.coldstart import run_coldstart
    from editr1.config import ColdstartConfig

    try:
        root, teacher, store = _stage_inputs(storage, params)
        summary = run_coldstart(load_config(ColdstartConfig, "coldstart", params), root, teacher, store,
                                root / "rrm" / "principles.parquet", root / "rrm" / "trajectories.parquet")
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    _emit(summary, summary_json)


def _emit(summary: dict[str, Any], path: Path | None) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    print_json(summary)


def _lake_checklist(root: Path, source: Path, instruction: str):
    """The principles stage's checklist for this (source image, instruction) when the lake has one."""
    from editr1.coldstart import load_principles
    from editr1.curation.ids import context_id
    from editr1.lake.objects import sha256_hex

    path = root / "rrm" / "principles.parquet"
    if not path.exists():
        return None
    return load_principles(path).get(context_id(sha256_hex(source.read_bytes()), instruction))


@app.command("score")
def score_cmd(model: ModelOpt,
              source: Annotated[Path, typer.Option(help="Source image file.")],
              edited: Annotated[Path, typer.Option(help="Edited image file.")],
              instruction: Annotated[str, typer.Option(help="The edit instruction.")],
              principles: Annotated[Path | None, typer.Option(help="JSON list of {question, category}; default: "
                                                                  "the lake's checklist for this context, else a "
                                                                  "generic one.")] = None,
              readout: Annotated[str, typer.Option(help="expected | parsed")] = "expected",
              max_new_tokens: int = 256, storage: StorageOpt = None, as_json: JsonFlag = False) -> None:
    """Judges one edit: reasoning, a per-principle table and the score."""
    from PIL import Image

    from editr1.models import load_rrm
    from editr1.rrm.items import Context, Quadruple
    from editr1.rrm.principles import generic_principles, parse_principles_json
    from editr1.rrm.scoring import score
    from editr1ops.registry import resolve_model_uri

    try:
        if principles:
            checklist = parse_principles_json(principles.read_text())
        else:
            checklist = _lake_checklist(storage_root(storage), source, instruction) or generic_principles(instruction)
        images = [Image.open(p).convert("RGB") for p in (source, edited)]
        rrm, processor = load_rrm(resolve_model_uri(model, storage_root(storage)))
    except (OSError, ValueError) as err:
        fail(str(err))
    quad = Quadruple(Context("cli", instruction, images[0]), images[1], tuple(checklist))
    (result,) = score(rrm, processor, [quad], readout=readout, max_new_tokens=max_new_tokens)
    sample = result.samples[0]
    answers = list(result.judgement.principle_scores)
    table = [{"question": p.question, "category": p.category,
              "score": answers[i] if i < len(answers) else None} for i, p in enumerate(checklist)]
    out = {"score": result.score, "parse_ok": result.parse_ok, "principles": table,
           "readouts": {"parsed": sample.parsed, "expected": sample.expected},
           "reasoning": result.judgement.reasoning, "text": result.text}
    if as_json:
        print_json(out)
        return
    console.print(out["reasoning"] or "(no reasoning)", highlight=False)
    grid = Table("#", "category", "question", "answer")
    for i, row in enumerate(table, 1):
        grid.add_row(str(i), row["category"], row["question"], {1: "yes", 0: "no"}.get(row["score"], "?"))
    console.print(grid)
    console.print(f"score ({readout}): {result.score}   parse_ok: {result.parse_ok}   "
                  f"parsed: {sample.parsed}   expected: {sample.expected}")


@app.command("serve")
def serve_cmd(model: ModelOpt, host: str = "127.0.0.1", port: int = 8000,
              token: Annotated[str | None, typer.Option(help="Bearer token (default: $EDITR1_REWARD_TOKEN).",
                                                        envvar="EDITR1_REWARD_TOKEN", show_default=False)] = None,
              readout: str = "expected", max_batch: int = 16, max_new_tokens: int = 256,
              storage: StorageOpt = None) -> None:
    """The reward server: /v1/score, OpenAI-compatible /v1/chat/completions, /health."""
    from editr1.serve.app import serve
    from editr1ops.registry import resolve_model_uri

    serve(resolve_model_uri(model, storage_root(storage)), host=host, port=port, token=token, readout=readout,
          max_batch=max_batch, max_new_tokens=max_new_tokens)


@eval_app.command("rrm")
def eval_rrm(model: Annotated[list[str], typer.Option("--model", help="NAME=URI or URI (repeatable); URIs as "
                                                                        "everywhere: folder, models:/…, hub id, tiny.")],
             split: Annotated[str | None, typer.Option(help="Held-out split (default: evaluate.split).")] = None,
             out: Annotated[Path | None, typer.Option(help="Report folder (default <storage>/reports/rrm).")] = None,
             teacher: Annotated[bool, typer.Option(help="Include the teacher baseline and gold agreement.")] = True,
             storage: StorageOpt = None, params: ParamsOpt = Path("params.yaml"), as_json: JsonFlag = False) -> None:
    """Pairwise accuracy (with and without ties, both readouts), per category and pair kind, against baselines."""
    from dataclasses import replace

    from editr1.config import EvaluateConfig
    from editr1.evaluation.report import run_rrm_eval
    from editr1ops.registry import resolve_model_uri

    cfg = load_config(EvaluateConfig, "evaluate", params)
    cfg = replace(cfg, split=split) if split else cfg
    try:
        root, judge, store = _stage_inputs(storage, params) if teacher else (storage_root(storage), None, None)
        if store is None:
            from editr1.config import CurateConfig
            from editr1.lake.objects import open_object_store

            curate_cfg = load_config(CurateConfig, "curate", params)
            store = open_object_store(curate_cfg.object_store, root, curate_cfg.s3_endpoint_url or None)
        models = {}
        for i, spec in enumerate(model):
            name, _, uri = spec.partition("=") if "=" in spec and not spec.startswith(("models:/", "runs:/")) \
                else (f"model{i + 1}" if len(model) > 1 else "model", "", spec)
            models[name] = resolve_model_uri(uri, root)
        report = run_rrm_eval(cfg, root, models, root / "rrm" / "principles.parquet", store,
                              out or root / "reports" / "rrm", judge)
    except (ValueError, OSError) as err:
        fail(str(err))
    if as_json:
        print_json(report)
    else:
        from editr1.evaluation.report import markdown

        sys.stdout.write(markdown(report))


@eval_app.command("prefix")
def eval_prefix(model: ModelOpt,
                split: Annotated[str, typer.Option(help="Split whose pairs and teacher trajectories to use.")] = "val",
                pairs: Annotated[int, typer.Option(help="Non-tie pairs to judge (each image three times).")] = 128,
                storage: StorageOpt = None, params: ParamsOpt = Path("params.yaml"), as_json: JsonFlag = False) -> None:
    """Where judgements go wrong: accuracy free-running vs with the teacher's description / reasoning forced."""
    from editr1.config import CurateConfig
    from editr1.evaluation.prefix import prefix_report
    from editr1.lake.images import ImageLoader
    from editr1.lake.objects import open_object_store
    from editr1.models import load_rrm
    from editr1ops.registry import resolve_model_uri

    root = storage_root(storage)
    curate_cfg = load_config(CurateConfig, "curate", params)
    try:
        store = open_object_store(curate_cfg.object_store, root, curate_cfg.s3_endpoint_url or None)
        rrm, processor = load_rrm(resolve_model_uri(model, root))
        report = prefix_report(rrm, processor, root, ImageLoader(store), split=split, max_pairs=pairs)
    except (ValueError, OSError) as err:
        fail(str(err))
    if as_json:
        print_json(report)
        return
    table = Table(title=f"{report['pairs']} non-tie {split} pairs ({report['pairs_without_trajectory']} without "
                        "teacher trajectories left out)")
    for column in ("teacher text forced", "accuracy (expected, no ties)", "lines as the teacher's"):
        table.add_column(column)
    for mode, row in report["modes"].items():
        table.add_row(mode, f"{100 * row['acc_no_ties']:.1f}%", f"{100 * row['line_agreement']:.0f}%")
    console.print(table)


@rrm_app.command("promote")
def rrm_promote(version: Annotated[int, typer.Argument(help="Registered version of edit-rrm.")],
                margin: Annotated[float, typer.Option(help="Accuracy the candidate must beat the champion by.")] = 0.01,
                storage: StorageOpt = None) -> None:
    """Sets alias `candidate`; sets `champion` only if the candidate beats it by the margin."""
    import mlflow

    from editr1ops.registry import promote
    from editr1ops.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(storage_root(storage)))
    decision = promote(version, margin)
    print_json(decision.to_dict())


@app.command("demo")
def demo(storage: Annotated[Path, typer.Option(help="Demo lake (wiped at each run if the demo made it).")] = Path("storage/demo"),
         seed: Annotated[int | None, typer.Option(help="World seed (default: params demo.seed).")] = None,
         pairs: Annotated[int | None, typer.Option(help="Pairs in the world batch (default: params demo.pairs).")] = None,
         profile: Annotated[str, typer.Option(help="A params.yaml profile, e.g. 'full' (longer training).")] = "",
         train: Annotated[bool | None, typer.Option("--train/--no-train",
                                                    help="Train and evaluate the RRM (default: params demo.train).")] = None,
         params: ParamsOpt = Path("params.yaml"),
         json_path: Annotated[Path | None, typer.Option("--json", help="Write the summary JSON here.")] = None) -> None:
    """Runs the whole embedded pipeline on this CPU (world → … → sft → gcpo ∥ control → evaluate) and prints the summary."""
    from editr1.config import ProfileError
    from editr1.demo import run_demo, write_summary

    try:
        summary = run_demo(storage, seed=seed, pairs=pairs, params_path=params, profile=profile, train=train)
    except (FileExistsError, ProfileError) as err:
        fail(str(err))
    if json_path:
        write_summary(summary, json_path)
    print_json(summary)


if __name__ == "__main__":
    app()
