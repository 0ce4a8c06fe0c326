"""MLflow model registry: log and register the final model, move aliases, load a model by URI or path.

Aliases only (registry stages are deprecated): `champion` is what predict and serve use,
`previous` is the champion before the last promotion, so a rollback is one command.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from fashion_exp.errors import UserError

CHAMPION = "champion"
PREVIOUS = "previous"
TEST_ACCURACY = "test_accuracy"
TEST_LOSS = "test_loss"


@dataclass
class LoadedModel:
    """A classifier ready to predict: uint8 images (n, s, s, 3) -> probabilities (n, classes)."""

    model: Any
    uri: str
    class_names: list[str]
    image_size: int
    interpolation: str
    run_id: str | None
    name: str | None = None
    version: str | None = None

    def predict(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        parts = []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            n = len(batch)
            if len(images) > batch_size and n < batch_size:  # one traced shape for every full-size call
                batch = np.concatenate([batch, np.zeros((batch_size - n, *batch.shape[1:]), batch.dtype)])
            parts.append(np.asarray(self.model.predict_on_batch(batch))[:n])
        return np.concatenate(parts) if parts else np.zeros((0, len(self.class_names)), np.float32)


def log_model(uri: str, run_id: str, model, metadata: dict[str, Any], example: np.ndarray, registered_name: str) -> str:
    """Save `model` with MLflow's Keras flavour (signature, input example, metadata) into run_id's
    artifacts at `model/`, then register it. Returns the new registered model version.

    metadata (class_names, image_size, interpolation) is stored in the MLmodel file.
    """
    import mlflow
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    signature = infer_signature(example, np.asarray(model.predict(example, verbose=0)))
    with tempfile.TemporaryDirectory() as tmp:
        # mlflow.keras.log_model(input_example=...) writes the example before creating its folder
        # (MLflow 3.17); saving into an existing folder and uploading it avoids that.
        path = Path(tmp) / "model"
        path.mkdir()
        mlflow.keras.save_model(model, str(path), signature=signature, input_example=example, metadata=metadata)
        MlflowClient(tracking_uri=uri).log_artifacts(run_id, str(path), "model")
    version = mlflow.register_model(f"runs:/{run_id}/model", registered_name)
    return str(version.version)


def _model_uri(reference: str) -> str:
    path = Path(reference).expanduser()
    if "://" not in reference and not reference.startswith("models:") and path.exists():
        if not (path / "MLmodel").is_file():
            raise UserError(f"{path}: not an MLflow model folder (no MLmodel file)")
        return str(path.resolve())
    return reference


def load(reference: str, tracking_uri: str) -> LoadedModel:
    """Load a model from a registry URI, a runs:/ URI or a local MLflow model folder."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    uri = _model_uri(reference)
    try:
        info = mlflow.models.get_model_info(uri)
        model = mlflow.keras.load_model(uri)
    except (MlflowException, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot load model {reference} ({first})") from None
    meta = info.metadata or {}
    if "class_names" not in meta:
        raise UserError(f"model {reference} has no class_names metadata: was it logged by train-final?")
    name = version = None
    run_id = info.run_id
    if uri.startswith("models:/"):
        name = uri[len("models:/") :].split("@")[0].split("/")[0]
        version = _version_of(tracking_uri, uri, name)
        if version is not None:
            run_id = _client(tracking_uri).get_model_version(name, version).run_id
    elif uri.startswith("runs:/"):
        run_id = uri[len("runs:/") :].split("/")[0]
    return LoadedModel(
        model=model,
        uri=reference,
        class_names=list(meta["class_names"]),
        image_size=int(meta["image_size"]),
        interpolation=str(meta.get("interpolation", "nearest")),
        run_id=run_id,
        name=name,
        version=version,
    )


def _version_of(tracking_uri: str, uri: str, name: str) -> str | None:
    client = _client(tracking_uri)
    rest = uri[len(f"models:/{name}") :]
    if rest.startswith("@"):
        return str(client.get_model_version_by_alias(name, rest[1:]).version)
    if rest.startswith("/"):
        return rest[1:]
    return None


# ---- aliases ------------------------------------------------------------------------------------


def _client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _alias(client: MlflowClient, name: str, alias: str):
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _accuracy(version) -> float | None:
    value = (version.tags or {}).get(TEST_ACCURACY)
    return float(value) if value is not None else None


def _rank(version) -> tuple[float, float, int]:
    """Best test accuracy first; equal accuracies (1/372 apart on the real test split) go to the
    lower test loss, then to the newer version."""
    loss = (version.tags or {}).get(TEST_LOSS)
    return (_accuracy(version), -float(loss) if loss is not None else float("-inf"), int(version.version))


def record_test_accuracy(uri: str, name: str, run_id: str, accuracy: float, loss: float | None = None) -> list[str]:
    """Tag every registered version logged by run_id with its test accuracy (and loss); returns the versions."""
    client = _client(uri)
    try:
        versions = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    except MlflowException:
        return []
    for version in versions:
        client.set_model_version_tag(name, version.version, TEST_ACCURACY, f"{accuracy:.6f}")
        if loss is not None:
            client.set_model_version_tag(name, version.version, TEST_LOSS, f"{loss:.6f}")
    return [str(v.version) for v in versions]


def promote(
    uri: str, name: str, version: str | None = None, run_id: str | None = None, force: bool = False
) -> list[str]:
    """Point `champion` at a version (given, the one run_id logged, or the best test accuracy).

    The old champion becomes `previous`. Refuses a worse or unevaluated version unless force.
    Returns the changes as sentences.
    """
    client = _client(uri)
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        versions = []
    if not versions:
        raise UserError(f"no versions of registered model '{name}' in {uri}: run train-final first")
    if version is not None:
        chosen = [v for v in versions if str(v.version) == str(version)]
        if not chosen:
            raise UserError(
                f"'{name}' has no version {version} (versions: {', '.join(sorted(v.version for v in versions))})"
            )
        candidate = chosen[0]
    elif run_id is not None:
        chosen = [v for v in versions if v.run_id == run_id]
        if not chosen:
            raise UserError(f"run {run_id} registered no version of '{name}'")
        candidate = max(chosen, key=lambda v: int(v.version))
    else:
        evaluated = [v for v in versions if _accuracy(v) is not None]
        if not evaluated:
            raise UserError(f"no version of '{name}' has a test accuracy: run `python -m fashion_exp evaluate` first")
        candidate = max(evaluated, key=_rank)
    champion = _alias(client, name, CHAMPION)
    if champion is not None and champion.version == candidate.version:
        return [f"version {candidate.version} is already the champion; nothing changed"]
    new_acc, old_acc = _accuracy(candidate), (_accuracy(champion) if champion else None)
    if not force:
        if new_acc is None:
            raise UserError(
                f"version {candidate.version} has no test accuracy: run evaluate on it first, or use --force"
            )
        if old_acc is not None and new_acc < old_acc:
            raise UserError(
                f"version {candidate.version} (test accuracy {new_acc:.4f}) is worse than champion version "
                f"{champion.version} ({old_acc:.4f}); use --force to promote it anyway"
            )
    changes = []
    if champion is not None:
        client.set_registered_model_alias(name, PREVIOUS, champion.version)
        changes.append(f"'{name}@{PREVIOUS}' -> version {champion.version}")
    client.set_registered_model_alias(name, CHAMPION, candidate.version)
    shown = f"test accuracy {new_acc:.4f}" if new_acc is not None else "not evaluated"
    changes.append(f"'{name}@{CHAMPION}' -> version {candidate.version} ({shown})")
    return changes


def rollback(uri: str, name: str) -> list[str]:
    """Swap `champion` and `previous`."""
    client = _client(uri)
    previous = _alias(client, name, PREVIOUS)
    if previous is None:
        raise UserError(f"'{name}' has no '{PREVIOUS}' alias: nothing to roll back to")
    champion = _alias(client, name, CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, previous.version)
    changes = [f"'{name}@{CHAMPION}' -> version {previous.version}"]
    if champion is not None:
        client.set_registered_model_alias(name, PREVIOUS, champion.version)
        changes.append(f"'{name}@{PREVIOUS}' -> version {champion.version}")
    return changes
