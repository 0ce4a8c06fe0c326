"""Questions other stages ask of the MLflow store, answered in plain values: a search's best
hyperparameters, the newest train-final run, a run's artifact file, what a run holds."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from fashion_exp.errors import ConfigError
from fashion_exp.redact import redact
from fashion_exp.tracking.experiments import connect
from fashion_exp.tracking.store import open_client
from fashion_exp.tracking.tags import EPOCH, KIND, OLD_VAL_ACCURACY, PARENT, PRESET, STAGE, VAL_ACCURACY


def best_from_search(uri: str, experiment: str, run_id: str | None = None) -> tuple[str, dict[str, str]]:
    """(parent run id, best hyperparameters as strings) of a tune search: run_id, or the latest finished one."""
    run = _search_run(uri, experiment, run_id)
    best = {k[len("best.") :]: v for k, v in run.data.params.items() if k.startswith("best.")}
    if not best:
        raise ConfigError(f"tune run {run.info.run_id} has no best hyperparameters (did every trial fail?)")
    return run.info.run_id, best


def ranked_trials(uri: str, experiment: str, run_id: str | None = None) -> tuple[str, list[dict[str, str]]]:
    """(parent run id, its completed trials' rows of trials.csv, best first) of a tune search: run_id,
    or the latest finished one. A row holds the trial's hyperparameters as strings."""
    import csv
    import io

    run = _search_run(uri, experiment, run_id)
    data = artifact_bytes(uri, run.info.run_id, "trials.csv")
    if data is None:
        raise ConfigError(f"tune run {run.info.run_id} has no trials.csv (did it end?)")
    reader = csv.DictReader(io.StringIO(data.decode()))
    objective = reader.fieldnames[2]  # trial_id, status, <objective>, best_epoch, ...
    rows = [row for row in reader if row["status"] == "COMPLETED" and row[objective]]
    rows.sort(key=lambda row: float(row[objective]), reverse=objective != "val_loss")  # stable: ties keep trial order
    return run.info.run_id, rows


def tune_searches(uri: str, experiment: str, run_id: str) -> list[str]:
    """The search runs whose trials train-final may choose from: with a staged tune's fine-tuning
    search (stage 2, or a ladder rung), every fine-tuning search of that tune that ended, oldest
    first; else run_id alone."""
    client, experiment_id = connect(uri, experiment)
    run = client.get_run(run_id)
    tune, stage = run.data.tags.get(PARENT), run.data.tags.get(STAGE, "")
    if not tune or not stage.isdigit() or int(stage) < 2:
        return [run_id]
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{PARENT}` = '{tune}' and tags.`{KIND}` = 'search' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
    )
    siblings = [r.info.run_id for r in found if r.data.tags.get(STAGE, "0").isdigit() and int(r.data.tags[STAGE]) >= 2]
    return siblings if run_id in siblings else [*siblings, run_id]


def ranked_rows(uri: str, experiment: str, run_ids: list[str]) -> list[dict[str, str]]:
    """The completed trials of several searches, best first (ties: in search order), each row with
    its search's run id under "search_run"."""
    rows, objective = [], None
    for run_id in run_ids:
        _, found = ranked_trials(uri, experiment, run_id)
        rows += [{**row, "search_run": run_id} for row in found]
        objective = objective or next((key for key in ("val_accuracy", "val_loss") if found and key in found[0]), None)
    if objective:
        rows.sort(key=lambda row: float(row[objective]), reverse=objective != "val_loss")
    return rows


def search_preset(uri: str, experiment: str, run_id: str | None = None) -> str | None:
    """The preset a tune search ran under (None for searches from before presets)."""
    return _search_run(uri, experiment, run_id).data.tags.get(PRESET)


def search_config(uri: str, experiment: str, run_id: str | None = None) -> dict:
    """The resolved config (config.yaml) of a tune search: run_id, or the latest finished one."""
    return run_config(uri, _search_run(uri, experiment, run_id).info.run_id)


def run_config(uri: str, run_id: str) -> dict:
    """A run's resolved config (its config.yaml), {} when it has none."""
    import yaml

    data = artifact_bytes(uri, run_id, "config.yaml")
    config = yaml.safe_load(data) if data is not None else {}
    return config if isinstance(config, dict) else {}


def _search_run(uri: str, experiment: str, run_id: str | None):
    """A tune search's parent run: run_id, or the latest finished one. ConfigError if there is none."""
    client, experiment_id = connect(uri, experiment)
    if run_id:
        try:
            run = client.get_run(run_id)
        except MlflowException:
            raise ConfigError(f"from_run={run_id}: no such run in {redact(uri)}") from None
        if run.data.tags.get(KIND) != "search":
            raise ConfigError(f"from_run={run_id}: run is not a tune search (its kind is {run.data.tags.get(KIND)})")
    else:
        run = _latest_finished(client, experiment_id, "search")
        if run is None:
            raise ConfigError(
                f"no finished tune search in experiment '{experiment}' of {redact(uri)}: "
                "run `python -m fashion_exp tune` first, or pass from_run=<run id>"
            )
    return run


def latest_final_run(uri: str, experiment: str) -> str:
    """The run id of the newest finished train-final run."""
    client = open_client(uri, create=False)
    found = client.get_experiment_by_name(experiment)
    run = _latest_finished(client, found.experiment_id, "final") if found else None
    if run is None:
        raise ConfigError(f"no finished train-final run in experiment '{experiment}': run train-final first")
    return run.info.run_id


def _latest_finished(client: MlflowClient, experiment_id: str, kind: str):
    """The newest FINISHED run of a kind ('search' or 'final') in an experiment, or None."""
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{KIND}` = '{kind}' and attributes.status = 'FINISHED'",
        order_by=["attributes.end_time DESC"],
        max_results=1,
    )
    return found[0] if found else None


@contextmanager
def artifact_file(uri: str, run_id: str, path: str) -> Iterator[Path | None]:
    """A local copy of a run's artifact for the length of the with-block, or None if the run has no
    such artifact. The copy's folder goes at the block's end: MLflow 3.17's own download, without a
    destination, copies the artifact into a new temporary folder on every store and leaves it."""
    client = open_client(uri)
    folder = path.rsplit("/", 1)[0] if "/" in path else None
    if path not in [a.path for a in client.list_artifacts(run_id, folder)]:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="fashion-exp-artifact-") as tmp:
        yield Path(client.download_artifacts(run_id, path, tmp))


def artifact_bytes(uri: str, run_id: str, path: str) -> bytes | None:
    """A run's artifact file's contents, or None if the run has no such artifact."""
    with artifact_file(uri, run_id, path) as local:
        return None if local is None else local.read_bytes()


@dataclass(frozen=True)
class RunContents:
    """What a run holds, read in one go: its tags, its latest metrics and the files in one artifact folder."""

    tags: dict[str, str]
    metrics: dict[str, float]
    files: set[str]  # artifact paths (folder/name) in the folder asked for


def run_contents(uri: str, run_id: str, folder: str) -> RunContents:
    """The tags, metrics and `folder` artifacts of run_id."""
    client = open_client(uri)
    run = client.get_run(run_id)
    files = {artifact.path for artifact in client.list_artifacts(run_id, folder)}
    return RunContents(dict(run.data.tags), dict(run.data.metrics), files)


@dataclass(frozen=True)
class SearchRecord:
    """What a tune search recorded about how its trials trained: its config.yaml and its tags."""

    run_id: str
    config: dict  # the search's resolved config (config.yaml), {} when the run has none
    tags: dict[str, str]


def search_record(uri: str, run_id: str) -> SearchRecord:
    """The config and tags of the search run run_id."""
    client = open_client(uri, create=False)
    run = client.get_run(run_id)
    return SearchRecord(run_id, run_config(uri, run_id), dict(run.data.tags))


@dataclass(frozen=True)
class TrialCheckpoint:
    """A finished trial's head at its best epoch, and the curves it was chosen on."""

    run_id: str
    head: bytes  # its checkpoint/head.keras
    history: dict[str, list[float]]  # epoch_* curves without the prefix: val_accuracy -> one value an epoch
    val_accuracy: float  # its score: the best epoch's
    runtime: str = ""  # the backbone runtime its search's features came from (features_runtime), "" unknown


def trial_checkpoint(uri: str, run_id: str) -> TrialCheckpoint | None:
    """The checkpoint and curves of the trial run run_id, or None when it did not finish with both.
    A trial from before 2026-12-01 kept its curves without the epoch_ prefix and its score as
    best_val_accuracy: read as such."""
    client = open_client(uri, create=False)
    run = client.get_run(run_id)
    head = artifact_bytes(uri, run_id, "checkpoint/head.keras") if run.info.status == "FINISHED" else None
    metrics = run.data.metrics
    curves = {key: key[len(EPOCH) :] for key in metrics if key.startswith(EPOCH)}
    score = metrics.get(VAL_ACCURACY)
    if not curves:  # (the old layout)
        curves = {key: key for key in ("accuracy", "loss", "val_accuracy", "val_loss") if key in metrics}
        score = next((metrics[key] for key in OLD_VAL_ACCURACY if key in metrics), score)
    if head is None or score is None or "val_accuracy" not in curves.values():
        return None
    history = {}
    for key, name in curves.items():
        points = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        history[name] = [m.value for m in points]
    return TrialCheckpoint(run_id, head, history, score)
