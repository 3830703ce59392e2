"""The `principles` and `coldstart` flows: checklists per curated context, then teacher
trajectories for SFT. Each logs one MLflow run in the experiment of the same name.

    python -m flows.coldstart --storage storage
"""

from __future__ import annotations

import argparse
import json

from prefect import flow

from tasks.coldstart import coldstart_task, principles_task


@flow(name="principles")
def principles(storage: str = "storage", params: str = "params.yaml") -> str:
    return principles_task(storage, params)


@flow(name="coldstart")
def coldstart(storage: str = "storage", params: str = "params.yaml") -> dict:
    return coldstart_task(storage, principles(storage, params), params)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--storage", default="storage")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    print(json.dumps(coldstart(args.storage, args.params), indent=2, default=str))
