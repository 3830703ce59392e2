"""The reward-model registry in MLflow: log a trained RRM, register it as `edit-rrm`, promote it,
and resolve any model URI the platform accepts to something `editr1.models.load_rrm` can load.

Model URIs, everywhere a model is named (score, serve, eval, the editor's reward):
- a local directory written by `save_rrm`;
- `models:/edit-rrm@champion` (or `@candidate`, `/3`): downloaded from the MLflow registry;
- `runs:/<run_id>/model`: a logged model of one run;
- a hub id such as `Qwen/Qwen2.5-VL-3B-Instruct` (loaded by transformers);
- `tiny`: a freshly built, untrained tiny RRM (smoke tests, server plumbing).

Promotion: `promote(version)` always moves alias `candidate` to the version, and moves `champion`
only when the version's held-out accuracy beats the current champion's by `margin`.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import yaml
from mlflow import MlflowClient

from editr1ops.tracking import tracking_uri

MODEL_NAME = "edit-rrm"
ACCURACY_TAG = "test_acc_no_ties"
RRM_ARTIFACT = "rrm"


class _RRMArtifact(mlflow.pyfunc.PythonModel):
    """Marks the logged directory as an MLflow model; the weights are the `rrm` artifact, loaded with
    `editr1.models.load_rrm` (the platform never unpickles this class to score)."""

    def predict(self, context, model_input: list[str], params: dict | None = None) -> list[str]:  # noqa: ARG002
        raise RuntimeError("load the RRM with editr1.models.load_rrm(<artifacts>/rrm) and score with "
                           "editr1.rrm.scoring.score")


def log_rrm(model_dir: Path, metrics: dict[str, float], *, register: bool = True,
            name: str = MODEL_NAME) -> dict[str, Any]:
    """Logs `model_dir` (a `save_rrm` folder) as the active run's model and registers it.

    Must be called inside an active MLflow run. The version is tagged with the held-out accuracy
    (`metrics[ACCURACY_TAG]`) that promotion compares."""
    info = mlflow.pyfunc.log_model(name="model", python_model=_RRMArtifact(),
                                   artifacts={RRM_ARTIFACT: str(model_dir)},
                                   pip_requirements=["editr1", "torch", "transformers"])
    result: dict[str, Any] = {"model_uri": info.model_uri}
    if register:
        version = mlflow.register_model(info.model_uri, name)
        client = MlflowClient()
        for key, value in metrics.items():
            client.set_model_version_tag(name, version.version, key, str(value))
        result["version"] = int(version.version)
    return result


@dataclass
class Promotion:
    version: int
    candidate: bool
    champion: bool
    reason: str
    candidate_accuracy: float | None
    champion_accuracy: float | None
    previous_champion: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _accuracy(client: MlflowClient, name: str, version: str | int) -> float | None:
    value = client.get_model_version(name, str(version)).tags.get(ACCURACY_TAG)
    return float(value) if value is not None else None


def promote(version: int, margin: float = 0.0, *, name: str = MODEL_NAME) -> Promotion:
    """Sets `candidate` to `version`; sets `champion` only if it beats the champion by `margin`."""
    client = MlflowClient()
    client.get_model_version(name, str(version))  # a clear MLflow error if it does not exist
    client.set_registered_model_alias(name, "candidate", str(version))
    accuracy = _accuracy(client, name, version)
    try:
        champion = client.get_model_version_by_alias(name, "champion")
    except mlflow.exceptions.MlflowException:
        champion = None
    if champion is None:
        client.set_registered_model_alias(name, "champion", str(version))
        return Promotion(version, True, True, "no champion yet", accuracy, None, None)
    champ_version, champ_acc = int(champion.version), _accuracy(client, name, champion.version)
    if champ_version == version:
        return Promotion(version, True, True, "already the champion", accuracy, champ_acc, champ_version)
    if accuracy is None:
        return Promotion(version, True, False, f"version {version} has no {ACCURACY_TAG} tag",
                         accuracy, champ_acc, champ_version)
    if champ_acc is not None and accuracy <= champ_acc + margin:
        return Promotion(version, True, False,
                         f"{ACCURACY_TAG} {accuracy:.4f} does not beat champion v{champ_version} "
                         f"({champ_acc:.4f}) by the margin {margin}", accuracy, champ_acc, champ_version)
    client.set_registered_model_alias(name, "champion", str(version))
    return Promotion(version, True, True, f"beats champion v{champ_version} by more than {margin}",
                     accuracy, champ_acc, champ_version)


def resolve_model_uri(uri: str, storage: Path | None = None) -> str:
    """A path or hub id that `load_rrm` accepts (see the module docstring for the forms)."""
    if uri.startswith(("models:/", "runs:/")):
        if storage is not None:
            mlflow.set_tracking_uri(tracking_uri(storage))
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
        mlmodel = yaml.safe_load((local / "MLmodel").read_text()) if (local / "MLmodel").exists() else {}
        entry = mlmodel.get("flavors", {}).get("python_function", {}).get("artifacts", {}).get(RRM_ARTIFACT)
        if not entry or not (local / entry["path"]).is_dir():
            raise FileNotFoundError(f"{uri} holds no '{RRM_ARTIFACT}' artifact (not logged by editr1)")
        return str(local / entry["path"])
    if uri == "tiny":
        from editr1.models import save_rrm, tiny_rrm
        from editr1.coldstart.corpus import world_corpus

        workdir = Path(tempfile.mkdtemp(prefix="editr1-tiny-"))
        model, processor = tiny_rrm(world_corpus(), workdir)
        save_rrm(model, processor, workdir / "model")
        return str(workdir / "model")
    if uri.startswith(("/", "./", "../", "~")) and not Path(uri).expanduser().exists():
        raise FileNotFoundError(f"no model folder at {uri}")  # a path, not a hub id: say so, not 'bad repo id'
    return uri
