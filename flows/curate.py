"""The `curate` flow: add every batch under an incoming folder to the lake, one MLflow run each.

    python -m flows.curate --incoming storage/incoming --storage storage
"""

from __future__ import annotations

import argparse

from prefect import flow

from tasks.curate import add_batch_task, find_batches_task


@flow(name="curate")
def curate(incoming: str = "storage/incoming", storage: str = "storage", params: str = "params.yaml") -> list[dict]:
    batches = find_batches_task(incoming)
    return [add_batch_task(batch, storage, params) for batch in batches]  # the lake lock serialises commits


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--incoming", default="storage/incoming")
    parser.add_argument("--storage", default="storage")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    for summary in curate(args.incoming, args.storage, args.params):
        print(summary["batch_id"], "added", summary["added"], "quarantined", summary["quarantined"])
