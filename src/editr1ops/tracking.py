"""MLflow for every stage: one experiment per stage name, a sqlite file under the lake root by
default (no server), `MLFLOW_TRACKING_URI` honoured. Artifacts go under the lake root too, never
into the current directory."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow


def tracking_uri(storage: Path | str) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(storage) / 'mlflow.db').resolve()}"


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value if not isinstance(value, (list, tuple)) else ",".join(map(str, value))
    return flat


def experiment_id(stage: str, storage: Path | str) -> str:
    mlflow.set_tracking_uri(tracking_uri(storage))
    found = mlflow.get_experiment_by_name(stage)
    if found is not None:
        return found.experiment_id
    artifacts = (Path(storage) / "mlartifacts" / stage).resolve().as_uri()
    try:
        return mlflow.create_experiment(stage, artifact_location=artifacts)
    except mlflow.exceptions.MlflowException:  # created concurrently
        return mlflow.get_experiment_by_name(stage).experiment_id


@contextlib.contextmanager
def stage_run(stage: str, storage: Path | str, params: Mapping[str, Any] | None = None,
              tags: Mapping[str, str] | None = None, run_name: str | None = None) -> Iterator[Any]:
    """An MLflow run in the stage's experiment with its params and lineage tags logged."""
    exp = experiment_id(stage, storage)
    with mlflow.start_run(experiment_id=exp, run_name=run_name) as run:
        if params:
            mlflow.log_params(_flatten(params))
        mlflow.set_tags({"stage": stage, **(tags or {})})
        yield run


def log_metrics(metrics: Mapping[str, Any]) -> None:
    """Logs the numeric entries of a (possibly nested) summary dict."""
    flat = _flatten(metrics)
    mlflow.log_metrics({k: float(v) for k, v in flat.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
