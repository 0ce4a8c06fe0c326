"""MLflow model registry: log and register the final model, move aliases, load a model by URI or path.

The final model is an MLflow 3 LoggedModel (the experiment's Models tab): made from its
train-final run (`source_run_id`), holding the model files, registered as a version that names
it (`model_id`); the run carries its id in the tag MODEL_ID, and evaluate's test metrics are
linked to it. Models logged before LoggedModels (files in the run's `model/` folder) still load.

Aliases only (registry stages are deprecated): `champion` is what predict and serve use,
`previous` is the champion before the last promotion, so a rollback is one command.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from fashion_exp.batching import pad_batch
from fashion_exp.errors import UserError, first_line
from fashion_exp.redact import redact
from fashion_exp.tracking.mlflow_private import process_tracking_uri
from fashion_exp.tracking.store import alias_lock, open_client
from fashion_exp.tracking.tags import MODEL_ID, NOTE, OLD_VAL_ACCURACY, OLD_VAL_LOSS, VAL_ACCURACY, VAL_LOSS

CHAMPION = "champion"
PREVIOUS = "previous"
TEST_ACCURACY = "test_accuracy"
TEST_LOSS = "test_loss"
MODEL_ARTIFACT = "model"  # where train-final logged the model in its run before LoggedModels
# What loading a shipped model needs, pinned to this environment's versions: what MLflow infers for
# it, named here because inferring runs a subprocess that imports TensorFlow and loads the model
# (about 6 s of CPU at every train-final and combine)
MODEL_REQUIREMENTS = ("mlflow", "keras", "numpy", "tensorflow")
REGISTERED_NOTE = (
    "The Fashion Classification Service's model: a photo (uint8 RGB) -> probabilities of 10 clothing "
    "categories. Versions come from train-final or combine; `promote` points @champion at the best "
    "on validation (never test); predict and serve use @champion."
)


@dataclass(frozen=True)
class ModelCard:
    """What a logged model says about itself, on its LoggedModel (params, validation metrics linked
    to the validation split, description) and its registry version (description, validation tags)."""

    params: dict[str, Any]
    val_accuracy: float
    val_loss: float
    description: str
    validation: dict[str, Any] | None = None  # the validation split's record (Dataset.describe)


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

    def predict(self, images: np.ndarray, batch_size: int) -> np.ndarray:
        """Probabilities for any number of images, `batch_size` at a time (one traced shape)."""
        parts = []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            shape = batch_size if len(images) > batch_size else len(batch)
            parts.append(np.asarray(self.model.predict_on_batch(pad_batch(batch, shape)))[: len(batch)])
        return np.concatenate(parts) if parts else np.zeros((0, len(self.class_names)), np.float32)


def log_model(
    uri: str, run_id: str, model, metadata: dict[str, Any], example: np.ndarray, registered_name: str, card: ModelCard
) -> str:
    """Save `model` with MLflow's Keras flavour (signature, input example, metadata) as a
    LoggedModel of run_id (the run's output: its page lists it), then register it. Returns the new
    registered model version.

    metadata (class_names, image_size, interpolation) is stored in the MLmodel file.
    """
    client = open_client(uri)
    model_id = _save(client, run_id, model, metadata, example, registered_name, card)
    client.set_tag(run_id, MODEL_ID, model_id)
    _link(client, run_id, model_id, card)
    try:
        client.create_registered_model(registered_name, description=REGISTERED_NOTE)
    except MlflowException as err:
        if err.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):  # made by an earlier run
            raise
    version = _register(client, registered_name, model_id, run_id)
    client.set_logged_model_tags(  # the model's page lists its registered version, as mlflow.register_model does
        model_id, {"mlflow.modelVersions": json.dumps([{"name": registered_name, "version": version.version}])}
    )
    client.update_model_version(registered_name, version.version, description=card.description)
    for key, value in ((VAL_ACCURACY, card.val_accuracy), (VAL_LOSS, card.val_loss)):  # what promote ranks by
        client.set_model_version_tag(registered_name, version.version, key, f"{value:.4f}")
    return str(version.version)


def _save(client: MlflowClient, run_id: str, model, metadata: dict, example: np.ndarray, name: str, card) -> str:
    """The model's files as a READY LoggedModel of run_id (its params and description from card); its id."""
    import getpass

    import mlflow
    from mlflow.models import infer_signature

    signature = infer_signature(example, np.asarray(model.predict(example, verbose=0)))
    logged = client.create_logged_model(
        client.get_run(run_id).info.experiment_id,
        name=name,
        source_run_id=run_id,
        model_type="keras",
        params={key: redact(str(value))[:500] for key, value in card.params.items()},
        tags={"mlflow.user": getpass.getuser(), NOTE: card.description},
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            # mlflow.keras.log_model(name=..., input_example=...) writes the example before it
            # creates its folder (MLflow 3.17: "No such file or directory: .../input_example.json");
            # saving into a folder that exists and uploading it to the LoggedModel avoids that.
            path = Path(tmp) / MODEL_ARTIFACT
            path.mkdir()
            mlflow.keras.save_model(
                model,
                str(path),
                signature=signature,
                input_example=example,
                metadata=metadata,
                pip_requirements=pinned(MODEL_REQUIREMENTS),
            )
            client.log_model_artifacts(logged.model_id, str(path))
    except BaseException:
        client.finalize_logged_model(logged.model_id, "FAILED")
        raise
    client.finalize_logged_model(logged.model_id, "READY")
    return logged.model_id


def pinned(names: tuple[str, ...]) -> list[str]:
    """name==version for each installed distribution."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in names]


def _link(client: MlflowClient, run_id: str, model_id: str, card: ModelCard) -> None:
    """The model as its run's output (the run page's Logged models table) and its validation
    metrics on it, linked to the validation split's record when there is one."""
    from mlflow.entities import LoggedModelOutput

    client.log_outputs(run_id, [LoggedModelOutput(model_id, step=0)])
    split = card.validation or {}
    for key, value in ((VAL_ACCURACY, card.val_accuracy), (VAL_LOSS, card.val_loss)):
        client.log_metric(
            run_id, key, value, model_id=model_id, dataset_name=split.get("name"), dataset_digest=split.get("digest")
        )


def _register(client: MlflowClient, name: str, model_id: str, run_id: str):
    """A new version of `name` from a LoggedModel. Its source is models:/<model_id>, as
    mlflow.register_model makes it (MLflow's SQL registry stores no model_id field), and MLflow 3.17
    resolves that source through the process-wide tracking URI, not this client's
    (tracking/mlflow_private.py): point that URI at this store meanwhile."""
    with process_tracking_uri(client.tracking_uri):
        return client.create_model_version(name, f"models:/{model_id}", run_id, model_id=model_id)


def model_id_of(client: MlflowClient, run_id: str) -> str | None:
    """The LoggedModel a train-final run made (None for runs from before LoggedModels)."""
    return client.get_run(run_id).data.tags.get(MODEL_ID)


def _download(client: MlflowClient, run_id: str, tmp: str) -> Path:
    """The model folder of a train-final run: its LoggedModel's files, or the run's `model/`."""
    import mlflow

    model_id = model_id_of(client, run_id)
    if model_id is None:
        return Path(client.download_artifacts(run_id, MODEL_ARTIFACT, tmp))
    location = client.get_logged_model(model_id).artifact_location
    return Path(
        mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=tmp, tracking_uri=client.tracking_uri)
    )


@dataclass
class _Where:
    """What a model reference points at: a local folder, or a run's model artifact."""

    folder: Path | None = None
    run_id: str | None = None
    name: str | None = None
    version: str | None = None


def _locate(reference: str, client: MlflowClient) -> _Where:
    """A local MLflow model folder, runs:/<id>/model, models:/<name>/<version> or models:/<name>@<alias>."""
    path = Path(reference).expanduser()
    if "://" not in reference and not reference.startswith("models:") and path.exists():
        if not (path / "MLmodel").is_file():
            raise UserError(f"{path}: not an MLflow model folder (no MLmodel file)")
        return _Where(folder=path.resolve())
    if reference.startswith("runs:/"):
        run_id, _, artifact = reference[len("runs:/") :].partition("/")
        if artifact.strip("/") not in ("", MODEL_ARTIFACT):
            raise UserError(f"{reference}: train-final logs its model at runs:/<id>/{MODEL_ARTIFACT}")
        return _Where(run_id=run_id)
    if reference.startswith("models:/"):
        rest = reference[len("models:/") :]
        name, alias = rest.split("@", 1) if "@" in rest else (rest.split("/")[0], None)
        if alias is not None:
            found = _alias(client, name, alias)
            if found is None:
                raise UserError(
                    f"{reference}: '{name}' has no version with alias '{alias}' yet: run train-final, "
                    "then evaluate, then promote (or pass --model models:/<name>/<version>)"
                )
        else:
            found = client.get_model_version(name, rest.split("/", 1)[1] if "/" in rest else "")
        return _Where(run_id=found.run_id, name=name, version=str(found.version))
    raise UserError(f"{reference}: no such model folder, and not a runs:/ or models:/ URI")


def run_of(reference: str, tracking_uri: str) -> str | None:
    """The run that logged the model a reference names (None for a local folder), without loading it."""
    if not _needs_store(reference):
        return None
    try:
        return _locate(reference, open_client(tracking_uri, create=False)).run_id
    except MlflowException as err:
        raise UserError(f"cannot load model {reference} ({first_line(err)})") from None


def _needs_store(reference: str) -> bool:
    """Whether a reference names a model in the store (not a local folder)."""
    return "://" in reference or reference.startswith("models:") or not Path(reference).expanduser().exists()


def _legacy_classes() -> dict:
    """Classes of fashion_exp a saved model may hold: a fine-tuned head saved with its optimizer
    (BlockAdam). Models train-final ships now hold Keras classes only (features/layers.plain_copy)."""
    from fashion_exp.head.model import BlockAdam

    return {"fashion_exp>BlockAdam": BlockAdam}


def _load_keras_safely(folder: Path, info, reference: str):
    """The model's .keras file, loaded with Keras' safe mode (no Python code from the file runs).
    MLflow's loader would load a TensorFlow SavedModel instead when the MLmodel says
    save_exported_model, and a SavedModel's graph can do anything (write files, ...): refused, as is
    a data path that leads out of the model's folder."""
    import keras

    flavor = info.flavors.get("keras")
    if flavor is None:
        raise UserError(f"model {reference} is not a Keras model (its MLmodel has no keras flavour)")
    if flavor.get("save_exported_model"):
        raise UserError(
            f"model {reference} is a TensorFlow SavedModel (save_exported_model: true), whose graph could run "
            "any code: fashion_exp loads only .keras files, in Keras' safe mode"
        )
    data = folder / str(flavor.get("data", "model"))
    path = Path(f"{data / 'model' if data.is_dir() else data}.keras")
    if not path.resolve().is_relative_to(folder.resolve()):
        raise UserError(f"model {reference}: its MLmodel points outside its folder ({flavor.get('data')})")
    return keras.saving.load_model(path, custom_objects=_legacy_classes(), safe_mode=True)


def _check_kind(model, meta: dict, reference: str) -> None:
    """The kind of model train-final and combine build: uint8 photos (n, s, s, 3) -> (n, classes)."""
    size, classes = int(meta.get("image_size", 0)), len(meta["class_names"])
    inputs = getattr(model, "inputs", None) or []
    shape = tuple(inputs[0].shape[1:]) if len(inputs) == 1 else None
    dtype = str(inputs[0].dtype) if len(inputs) == 1 else None
    output = tuple(model.outputs[0].shape[1:]) if len(getattr(model, "outputs", None) or []) == 1 else None
    if shape != (size, size, 3) or "uint8" not in dtype or output != (classes,):
        raise UserError(
            f"model {reference} is not a classifier fashion_exp builds: it takes {shape} {dtype} and gives {output}, "
            f"not ({size}, {size}, 3) uint8 photos -> {classes} class probabilities"
        )


def load(reference: str, tracking_uri: str, keras_model: bool = True) -> LoadedModel:
    """Load a model from a registry URI, a runs:/ URI or a local MLflow model folder.
    keras_model=False: its description alone (metadata, run, version; `model` None), for a service
    that runs the model's ONNX file: neither the Keras file nor its weights are read into memory."""
    import mlflow

    client = open_client(tracking_uri, create=False) if _needs_store(reference) else None
    try:
        where = _locate(reference, client)
        with tempfile.TemporaryDirectory() as tmp:
            folder = where.folder or _download(client, where.run_id, tmp)
            info = mlflow.models.Model.load(str(folder))
            model = _load_keras_safely(Path(folder), info, reference) if keras_model else None
    except (MlflowException, OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        # (a tampered .keras file makes Keras' deserializer raise any of these: one line, not a traceback)
        raise UserError(f"cannot load model {reference} ({first_line(err)})") from None
    meta = info.metadata or {}
    if "class_names" not in meta:
        raise UserError(f"model {reference} has no class_names metadata: was it logged by train-final?")
    if keras_model:
        _check_kind(model, meta, reference)
    return LoadedModel(
        model=model,
        uri=reference,
        class_names=list(meta["class_names"]),
        image_size=int(meta["image_size"]),
        interpolation=str(meta.get("interpolation", "nearest")),
        run_id=where.run_id or info.run_id,
        name=where.name,
        version=where.version,
    )


# ---- aliases ------------------------------------------------------------------------------------


def _alias(client: MlflowClient, name: str, alias: str):
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _accuracy(version) -> float | None:
    value = (version.tags or {}).get(TEST_ACCURACY)
    return float(value) if value is not None else None


@dataclass(frozen=True)
class _Validation:
    """A version's validation score: what train-final logged for the model it shipped."""

    accuracy: float
    loss: float

    @staticmethod
    def of(client: MlflowClient, version) -> _Validation | None:
        """None when the version's run logged no validation score (not made by train-final)."""
        try:
            metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
        except MlflowException:
            return None
        # a run from before 2026-12-01 kept its score under an old name (its val_accuracy was a curve's last epoch)
        accuracy = next((metrics[name] for name in (*OLD_VAL_ACCURACY, VAL_ACCURACY) if name in metrics), None)
        if accuracy is None:
            return None
        loss = next((metrics[name] for name in (*OLD_VAL_LOSS, VAL_LOSS) if name in metrics), float("inf"))
        return _Validation(accuracy, loss)

    def rank(self, version) -> _Rank:
        """Best validation accuracy first; equal accuracies (1/341 apart on the real validation split)
        go to the lower validation loss, then to the newer version."""
        return _Rank(self.accuracy, -self.loss, int(version.version))


@dataclass(frozen=True, order=True)
class _Rank:
    """A version's place by validation (compared field by field: the larger ranks higher)."""

    accuracy: float
    lower_loss: float  # the validation loss, negated
    version: int


def record_test_accuracy(uri: str, name: str, run_id: str, accuracy: float, loss: float | None = None) -> list[str]:
    """Tag every registered version logged by run_id with its test accuracy (and loss); returns the versions."""
    client = open_client(uri)
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
    """Point `champion` at a version (given, the one run_id logged, or the evaluated version with the
    best validation accuracy: the test split scores a model, it never chooses one).

    The old champion becomes `previous`. Refuses, unless force, a version that is not evaluated on
    the test split (a release's test score is known before it ships) or is worse on validation.
    One promote or rollback at a time moves the aliases (alias_lock), so `champion` and
    `previous` never name the same version. Returns the changes as sentences.
    """
    client = open_client(uri, create=False)  # first: the lock file goes beside the store
    with alias_lock(uri, name):
        return _promote(client, uri, name, version, run_id, force)


def _promote(client: MlflowClient, uri: str, name: str, version, run_id, force: bool) -> list[str]:
    versions = _versions(client, uri, name)
    if version is None and run_id is None:
        candidate, validation = _best_evaluated(client, name, versions)
    else:
        candidate, validation = _named(versions, name, version, run_id), None
    champion = _alias(client, name, CHAMPION)
    if champion is not None and champion.version == candidate.version:
        return [f"version {candidate.version} is already the champion; nothing changed"]
    if validation is None:
        validation = _Validation.of(client, candidate)
    if not force:
        _refuse_unproven(client, candidate, validation, champion)
    return _move_aliases(client, name, candidate, champion, validation)


def _versions(client: MlflowClient, uri: str, name: str) -> list:
    """Every version of registered model `name`; UserError when it has none."""
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        versions = []
    if not versions:
        raise UserError(f"no versions of registered model '{name}' in {redact(uri)}: run train-final first")
    return versions


def _named(versions: list, name: str, version: str | None, run_id: str | None):
    """The version asked for by number, else the newest version run_id registered; UserError if none."""
    if version is not None:
        chosen = [v for v in versions if str(v.version) == str(version)]
        if not chosen:
            numbers = sorted((str(v.version) for v in versions), key=int)  # (some stores give ints)
            raise UserError(f"'{name}' has no version {version} (versions: {', '.join(numbers)})")
        return chosen[0]
    chosen = [v for v in versions if v.run_id == run_id]
    if not chosen:
        raise UserError(f"run {run_id} registered no version of '{name}'")
    return max(chosen, key=lambda v: int(v.version))


def _best_evaluated(client: MlflowClient, name: str, versions: list) -> tuple[Any, _Validation]:
    """The evaluated version best on validation (_Validation.rank), and its score; UserError when no
    version is evaluated on test or none of those has a validation score."""
    evaluated = [v for v in versions if _accuracy(v) is not None]
    if not evaluated:
        raise UserError(f"no version of '{name}' has a test accuracy: run `python -m fashion_exp evaluate` first")
    scored = [(v, score) for v in evaluated if (score := _Validation.of(client, v)) is not None]
    if not scored:
        raise UserError(
            f"no evaluated version of '{name}' has a validation score from train-final: choose one with --version"
        )
    return max(scored, key=lambda pair: pair[1].rank(pair[0]))


def _refuse_unproven(client: MlflowClient, candidate, validation: _Validation | None, champion) -> None:
    """UserError (promote --force overrides it) for a version with no test accuracy, or one worse than
    the champion on validation."""
    if _accuracy(candidate) is None:
        raise UserError(f"version {candidate.version} has no test accuracy: run evaluate on it first, or use --force")
    old = _Validation.of(client, champion) if champion is not None else None
    if validation is not None and old is not None and validation.accuracy < old.accuracy:
        raise UserError(
            f"version {candidate.version} (val accuracy {validation.accuracy:.4f}) is worse than champion version "
            f"{champion.version} ({old.accuracy:.4f}); use --force to promote it anyway"
        )


def _move_aliases(client: MlflowClient, name: str, candidate, champion, validation: _Validation | None) -> list[str]:
    """`previous` to the old champion (if any), `champion` to the candidate; the changes as sentences."""
    changes = []
    if champion is not None:
        client.set_registered_model_alias(name, PREVIOUS, champion.version)
        changes.append(f"'{name}@{PREVIOUS}' -> version {champion.version}")
    client.set_registered_model_alias(name, CHAMPION, candidate.version)
    changes.append(f"'{name}@{CHAMPION}' -> version {candidate.version} ({_scores(validation, _accuracy(candidate))})")
    return changes


def _scores(validation: _Validation | None, test: float | None) -> str:
    shown = [f"val accuracy {validation.accuracy:.4f}"] if validation is not None else []
    shown.append(f"test accuracy {test:.4f}" if test is not None else "not evaluated")
    return ", ".join(shown)


def rollback(uri: str, name: str) -> list[str]:
    """Swap `champion` and `previous` (under alias_lock, like promote)."""
    client = open_client(uri, create=False)
    with alias_lock(uri, name):
        return _rollback(client, name)


def _rollback(client: MlflowClient, name: str) -> list[str]:
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
