"""One MLflow run written through explicit ids (no global active run): params, per-step metrics,
datasets, files, figures and Keras models, and how the run ends.

Every param, tag, text and JSON artifact passes through `redact` on its way in: a tracking.uri or
a config value with a password in it is recorded as user:***@host (the config logged whole, say)."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from fashion_exp.errors import ConfigError
from fashion_exp.redact import redact, redact_values
from fashion_exp.tracking import plots
from fashion_exp.tracking.experiments import connect
from fashion_exp.tracking.store import open_client
from fashion_exp.tracking.system_metrics import system_metrics
from fashion_exp.tracking.tags import COMMAND_LINE, MODEL_ID

FINAL_EXPERIMENT_NOTE = (
    "fashion_exp's final models: one run per train-final or combine, its model a LoggedModel registered as a "
    "version; evaluate logs test scores to it. val_accuracy is the shipped model's validation score, which "
    "promote ranks versions by."
)


def status_for(error: BaseException) -> str:
    """The MLflow status of a run that `error` ended: KILLED for Ctrl-C, FAILED for anything else."""
    return "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"


def _short(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def recorded(value: Any, limit: int = 500) -> str:
    """A param or tag value as a run records it: a string without passwords, at most `limit` long
    (redacted before it is cut, so a cut cannot leave half a password behind)."""
    return _short(redact(str(value)), limit)


def recorded_tags(tags: dict[str, Any]) -> dict[str, str]:
    """Tags as a run records them (recorded, up to MLflow's 5000 characters)."""
    return {key: recorded(value, 5000) for key, value in tags.items()}


def command_line() -> list[str]:
    """This process's command as a user would type it (python -m fashion_exp tune ...), passwords hidden."""
    program = "python -m fashion_exp" if sys.argv and sys.argv[0].endswith("__main__.py") else Path(sys.argv[0]).name
    return [program, *(redact(word) for word in sys.argv[1:])]


def source_tags() -> dict[str, str]:
    """Where a run comes from, as MLflow's own run context says it (user, git commit of the code,
    source type): its source name is the command (`python -m fashion_exp tune`: mlflow ui shows a
    source's last path part, so no overrides there), COMMAND_LINE the whole line."""
    from mlflow.tracking.context.registry import resolve_tags

    words = command_line()
    command = " ".join(w for w in words[:2] if "/" not in w) if words[0].startswith("python -m") else words[0]
    return {**resolve_tags(), "mlflow.source.name": command, COMMAND_LINE: recorded(" ".join(words), 5000)}


def log_datasets(client: MlflowClient, run_id: str, splits: list[dict[str, Any]]) -> None:
    """Log dataset records (Dataset.describe) as the run's inputs, each tagged with its split
    (MLflow's `mlflow.data.context`): the Datasets column of mlflow ui."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.types import ColSpec, Schema

    # what a record is: a photo file (the folders under the source are the classes) and its class
    schema = Schema([ColSpec("binary", "image"), ColSpec("string", "label")])
    inputs = []
    for split in splits:
        source = LocalArtifactDatasetSource(split["source"])
        profile = {key: split[key] for key in ("images", "classes", "per_class") if key in split}
        described = MetaDataset(source, name=split["name"], digest=split["digest"], schema=schema).to_dict()
        dataset = Dataset(**described, profile=json.dumps(profile))  # (MLflow's fields: name ... source_type, schema)
        inputs.append(DatasetInput(dataset, [InputTag("mlflow.data.context", split["split"])]))
    try:
        client.log_inputs(run_id, inputs)
    except MlflowException as err:
        # two commands logging the same new split at once: MLflow's store looks for the dataset, then
        # inserts it, and the slower one's insert breaks the store's unique (experiment, name, digest)
        # key. Its transaction is rolled back; the second try finds the dataset the other inserted.
        if not any(mark in str(err) for mark in DUPLICATE_ROW):
            raise
        client.log_inputs(run_id, inputs)


DUPLICATE_ROW = ("UNIQUE constraint failed", "UniqueViolation", "duplicate key value")  # sqlite, PostgreSQL


class RunLogger:
    """One MLflow run written through explicit ids: params, per-step metrics, files and figures."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client = client
        self.run_id = run_id

    @classmethod
    def start(
        cls, uri: str, experiment: str, run_name: str, tags: dict[str, str], started: float | None = None
    ) -> RunLogger:
        """A new run; started (time.time() of the command's start, when work came before the run)
        makes MLflow's duration the command's, as the run's own *_seconds metrics count it."""
        client, experiment_id = connect(uri, experiment, FINAL_EXPERIMENT_NOTE)
        at = None if started is None else int(started * 1000)
        tags = {**source_tags(), **recorded_tags(tags)}
        run = client.create_run(experiment_id, run_name=run_name, tags=tags, start_time=at)
        return cls(client, run.info.run_id)

    @classmethod
    def reopen(cls, uri: str, run_id: str) -> RunLogger:
        client = open_client(uri)
        try:
            client.get_run(run_id)
        except MlflowException:
            raise ConfigError(f"run {run_id} not found in {redact(uri)}") from None
        return cls(client, run_id)

    def params(self, values: dict[str, Any]) -> None:
        existing = self.client.get_run(self.run_id).data.params
        new = [Param(k, recorded(v)) for k, v in values.items() if k not in existing]
        for start in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[start : start + 100])

    def metrics(self, values: dict[str, float], step: int = 0, model_of: dict[str, Any] | None = None) -> None:
        """model_of: a dataset record (Dataset.describe) whose scores these are, for the run's
        LoggedModel (tags.MODEL_ID): the model's page then shows them, with the dataset."""
        now = int(time.time() * 1000)
        link = {}
        model_id = self.client.get_run(self.run_id).data.tags.get(MODEL_ID) if model_of else None
        if model_id:
            link = {"model_id": model_id, "dataset_name": model_of["name"], "dataset_digest": model_of["digest"]}
        metrics = [Metric(k, float(v), now, step, **link) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def curves(self, history: dict[str, list[float]]) -> None:
        """Per-epoch series (name -> values): value i is logged at step i, in batches of 1000."""
        now = int(time.time() * 1000)
        points = [Metric(k, float(v), now, i) for k, values in history.items() for i, v in enumerate(values)]
        for start in range(0, len(points), 1000):
            self.client.log_batch(self.run_id, metrics=points[start : start + 1000])

    def datasets(self, splits: list[dict[str, Any]]) -> None:
        """Dataset records (Dataset.describe) as the run's inputs."""
        if splits:
            log_datasets(self.client, self.run_id, splits)

    def tags(self, values: dict[str, str]) -> None:
        tags = [RunTag(k, v) for k, v in recorded_tags(values).items()]
        self.client.log_batch(self.run_id, tags=tags)

    def text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, redact(text), name)

    def json(self, value: Any, name: str) -> None:
        self.client.log_dict(self.run_id, redact_values(value), name)

    def figure(self, fig, name: str) -> None:
        self.client.log_figure(self.run_id, fig, name)
        plots.close(fig)

    def file(self, path: Path | str, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def keras(self, model, name: str) -> None:
        """A Keras model saved as the artifact `name` (folder/file.keras)."""
        folder, _, file_name = name.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            model.save(Path(tmp) / file_name)
            self.file(Path(tmp) / file_name, folder or None)

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)

    @contextmanager
    def recording(self) -> Iterator[RunLogger]:
        """End the run FINISHED when the block completes, KILLED on Ctrl-C, FAILED on an error;
        record system metrics on it meanwhile."""
        try:
            with system_metrics(self.client.tracking_uri, self.run_id):
                yield self
        except BaseException as err:
            self.end(status_for(err))
            raise
        self.end("FINISHED")
