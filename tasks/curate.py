"""Tasks of the `curate` stage."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from editr1.config import CurateConfig, WorldConfig, config_to_dict, load_config
from editr1.curation import add_batch, find_batches
from editr1.world import write_batch
from tasks.retry import retry_on_io
from editr1ops.tracking import log_metrics, stage_run


@task(name="find-batches")
def find_batches_task(incoming: str) -> list[str]:
    return [str(p) for p in find_batches(Path(incoming))]


@task(name="world-batch")
def world_batch_task(out: str, pairs: int, seed: int, params: str) -> str:
    write_batch(Path(out), pairs, seed, load_config(WorldConfig, "world", params))
    return out


@task(name="add-batch", retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=retry_on_io)
def add_batch_task(batch: str, storage: str, params: str) -> dict:
    cfg = load_config(CurateConfig, "curate", params)
    summary = add_batch(batch, Path(storage), cfg).to_dict()
    with stage_run("curate", storage, config_to_dict(cfg), run_name=summary["batch_key"],
                   tags={"batch_id": summary["batch_id"], "data_hash": summary["fingerprint"],
                         "source": batch, "already_ingested": str(summary["already_ingested"])}):
        log_metrics({k: summary[k] for k in ("rows", "added", "votes", "duplicates", "conflicts",
                                             "quarantined", "seconds")}
                    | {f"quarantined.{r}": n for r, n in summary["quarantined_by_reason"].items()})
    return summary
