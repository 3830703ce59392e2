"""The whole embedded pipeline as one Prefect flow (stages so far: world batch → curate →
principles → coldstart).

    python -m flows.pipeline [--storage storage] [--seed 0] [--pairs 600]
"""

from __future__ import annotations

import argparse
import json

from prefect import flow

from flows.coldstart import coldstart
from flows.curate import curate
from tasks.curate import world_batch_task


@flow(name="pipeline")
def pipeline(storage: str = "storage", seed: int = 0, pairs: int = 600, params: str = "params.yaml") -> dict:
    world_batch_task(f"{storage}/incoming/world-s{seed}", pairs, seed, params)
    curated = curate(f"{storage}/incoming", storage, params)
    return {"curate": curated, "coldstart": coldstart(storage, params)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--storage", default="storage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pairs", type=int, default=600)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    print(json.dumps(pipeline(args.storage, args.seed, args.pairs, args.params), indent=2, default=str))
