"""MLflow: one parent run per search, one nested child run per trial, plots and artifacts.

Only the tracking modules talk to MLflow. It uses MlflowClient with explicit run
ids, so nothing depends on a global active run.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from fashion_exp.errors import ConfigError, last_line
from fashion_exp.tracking import plots
from fashion_exp.tracking.store import open_client, unusable

SEARCH_ID = "fashion_exp.search_id"
TRIAL_ID = "fashion_exp.trial_id"
KIND = "fashion_exp.kind"
WORKER = "fashion_exp.worker"  # on a trial's run: the tuner id that ran it (worker-0, ..., or tuner0)
HOST = "fashion_exp.host"  # on a trial's run: the machine that ran it
PARENT = "mlflow.parentRunId"
MODEL_ID = "fashion_exp.model_id"  # on a train-final run: the id of the LoggedModel it made (registry.log_model)
SHIPPED_VAL_ACCURACY = "shipped_val_accuracy"  # on a train-final run: the shipped model's validation score,
SHIPPED_VAL_LOSS = "shipped_val_loss"  # which promote ranks versions by (never by test)


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux; 0 where /proc is missing)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def status_for(error: BaseException) -> str:
    """The MLflow status of a run that `error` ended: KILLED for Ctrl-C, FAILED for anything else."""
    return "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"


def _short(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# MLflow 3's UI opens an experiment of this kind in its model-training view (runs, metrics), not
# the GenAI one. MLflow 3.17's UI decides by a browser-wide GenAI / Model training switch instead
# (default GenAI) unless the link says ?workflowType=machine_learning: ui_link gives that link.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def ui_link(uri: str, experiment_id: str) -> str:
    """How to look at an experiment's runs in mlflow ui: the command (for a local store) and the
    link that opens its runs table."""
    page = f"#/experiments/{experiment_id}?workflowType=machine_learning"
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{page}"
    return f"mlflow ui --backend-store-uri {uri}   then open http://127.0.0.1:5000/{page}"


def connect(uri: str, experiment: str) -> tuple[MlflowClient, str]:
    """A client and the id of `experiment` (created if new, tagged EXPERIMENT_KIND); ConfigError if
    the store is unusable."""
    try:
        client = open_client(uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return client, client.create_experiment(experiment, tags=dict([EXPERIMENT_KIND]))
        if found.lifecycle_stage == "deleted":
            raise ConfigError(
                f"tracking.experiment: '{experiment}' is deleted in {uri}; restore it in mlflow ui or pick another name"
            )
        if EXPERIMENT_KIND[0] not in found.tags:  # made before fashion_exp tagged its experiments
            client.set_experiment_tag(found.experiment_id, *EXPERIMENT_KIND)
        return client, found.experiment_id
    except MlflowException as err:
        raise unusable(uri, err) from None


def log_datasets(client: MlflowClient, run_id: str, splits: list[dict[str, Any]]) -> None:
    """Log dataset records (Dataset.describe) as the run's inputs, each tagged with its split
    (MLflow's `mlflow.data.context`): the Datasets column of mlflow ui."""
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.entities import Dataset, DatasetInput, InputTag

    inputs = []
    for split in splits:
        source = LocalArtifactDatasetSource(split["source"])
        dataset = Dataset(
            name=split["name"],
            digest=split["digest"],
            source_type=source._get_source_type(),
            source=source.to_json(),
            profile=json.dumps({"images": split["images"]}),
        )
        inputs.append(DatasetInput(dataset, [InputTag("mlflow.data.context", split["split"])]))
    client.log_inputs(run_id, inputs)


SYSTEM_METRICS_SECONDS = 10  # how often CPU, memory, disk, network (and GPU) use is sampled


@contextmanager
def system_metrics(uri: str, run_id: str | None) -> Iterator[None]:
    """MLflow's system metrics (system/cpu_utilization_percentage, system/system_memory_usage_megabytes,
    ... and system/gpu_* where a GPU is seen) on `run_id` while the block runs; nothing for None."""
    if run_id is None:
        yield
        return
    import logging

    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # no "started monitoring" lines
    monitor = SystemMetricsMonitor(
        run_id, sampling_interval=SYSTEM_METRICS_SECONDS, resume_logging=True, tracking_uri=uri
    )
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


class SearchTracker:
    """Records a search in MLflow: the parent run, and one nested child run per trial.

    It is told about trials in plain values (ids, params, metrics, a Keras model): it knows
    MLflow, not keras-tuner.
    """

    def __init__(self, uri: str, experiment: str):
        self.uri = uri
        self.client, self.experiment_id = connect(uri, experiment)
        self.parent_id: str | None = None
        self.owns_parent = True  # False on a search worker: the chief starts and ends the parent run
        self.search_id: str | None = None
        self.children: dict[str, str] = {}  # trial id -> child run id
        self.datasets: list[dict[str, Any]] = []  # Dataset.describe() of the splits trials use: each child's inputs
        self._started: dict[str, float] = {}
        self._history: dict[str, dict[str, list[float]]] = {}

    # ---- the parent run -----------------------------------------------------------------

    def open_search(self, search_id: str, resume: bool, run_name: str) -> bool:
        """Start (or with resume, reopen) the parent run of search_id. Returns True if reopened."""
        self.search_id = search_id
        if resume:
            found = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{SEARCH_ID}` = '{search_id}' and tags.`{KIND}` = 'search'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if found:
                self.parent_id = found[0].info.run_id
                self.client.update_run(self.parent_id, status="RUNNING")
                self.load_children()
                return True
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags={SEARCH_ID: search_id, KIND: "search"})
        self.parent_id = run.info.run_id
        return False

    def attach(self, search_id: str, chief: str) -> None:
        """Log trials under the running parent run of search_id, which a chief at `chief` owns
        (a search worker). ConfigError if no such search is running in this store."""
        self.search_id = search_id
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{SEARCH_ID}` = '{search_id}' and tags.`{KIND}` = 'search' "
            "and attributes.status = 'RUNNING'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not found:
            raise ConfigError(
                f"no search {search_id} is running in {self.uri}: the chief at {chief} runs another search, or "
                "logs elsewhere; start tune-worker with the chief's overrides and its tracking.uri"
            )
        self.parent_id = found[0].info.run_id
        self.owns_parent = False

    def load_children(self) -> None:
        """Read the trial -> child run map back from MLflow (trials run by other processes included)."""
        self.children = {child.data.tags[TRIAL_ID]: child.info.run_id for child in self._child_runs()}

    @contextmanager
    def recording(self) -> Iterator[SearchTracker]:
        """Inside the block an error ends the running trial's run and the parent run: KILLED on
        Ctrl-C, FAILED otherwise (finish_search ends the parent when all went well). The process
        that owns the parent run records system metrics on it meanwhile."""
        try:
            with system_metrics(self.uri, self.parent_id if self.owns_parent else None):
                yield self
        except BaseException as err:
            self.abort(status_for(err))
            raise

    def _child_runs(self) -> list:
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{PARENT}` = '{self.parent_id}'",
            max_results=10_000,
        )

    def log_setup(
        self, params: dict[str, str], tags: dict[str, str], texts: dict[str, str], dicts: dict[str, Any]
    ) -> None:
        """Flat params, tags, text artifacts (file name -> text), JSON artifacts and the datasets
        (self.datasets) on the parent run."""
        run = RunLogger(self.client, self.parent_id)
        run.datasets(self.datasets)
        run.params(params)
        run.tags(tags)
        for name, text in texts.items():
            run.text(text, name)
        for name, value in dicts.items():
            run.json(value, name)

    def finish_search(
        self,
        best: dict[str, Any] | None,
        objective: str,
        summary_csv: str,
        timings: dict[str, float],
        curves_title: str,
    ) -> None:
        """Best hyperparameters, timings, the trials table and the comparison plot; then end the
        parent run: FINISHED if a trial completed, else FAILED.

        best: {trial_id, score, hyperparameters, run_id} of the best trial, or None.
        """
        run = RunLogger(self.client, self.parent_id)
        run.metrics(timings)
        if best is not None:
            run.params({f"best.{k}": v for k, v in best["hyperparameters"].items()})
            run.tags({"best_trial_id": best["trial_id"], "best_run_id": best.get("run_id") or ""})
            run.tags({f"best.{k}": v for k, v in best["hyperparameters"].items()})
            run.metrics({f"best_{objective}": best["score"]})
        run.text(summary_csv, "trials.csv")
        curves = self.curves(objective)
        if curves:
            best_label = f"trial {best['trial_id']}" if best else None
            figure = plots.compare_trials(curves, best_label, curves_title, objective)
            run.figure(figure, f"plots/{objective}_by_trial.png")
        run.end("FINISHED" if best is not None else "FAILED")

    def curves(self, metric: str) -> dict[str, list[float]]:
        """`metric` per epoch of every finished child run, read back from MLflow."""
        out = {}
        for child in sorted(self._child_runs(), key=lambda r: r.data.tags.get(TRIAL_ID, "")):
            if child.info.status != "FINISHED":
                continue
            history = self.client.get_metric_history(child.info.run_id, metric)
            out[f"trial {child.data.tags[TRIAL_ID]}"] = [m.value for m in sorted(history, key=lambda m: m.step)]
        return out

    def abort(self, status: str) -> None:
        """End the running child (if any) and the parent with status (KILLED on Ctrl-C, FAILED on error)."""
        for trial_id in list(self._started):
            self.client.set_terminated(self.children[trial_id], status=status)
        self._started.clear()
        if self.parent_id and self.owns_parent:
            self.client.set_terminated(self.parent_id, status=status)

    # ---- child runs -----------------------------------------------------------------------

    def start_trial(self, trial_id: str, params: dict[str, Any], tags: dict[str, str] | None = None) -> None:
        """A child run for the trial, replacing the run of an interrupted attempt at it (made by
        this process or any other: a killed worker's, say), so each trial has one run."""
        self.children.pop(trial_id, None)
        stale = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{PARENT}` = '{self.parent_id}' and tags.`{TRIAL_ID}` = '{trial_id}'",
        )
        for run in stale:
            self.client.delete_run(run.info.run_id)
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{trial_id}",
            tags={PARENT: self.parent_id, TRIAL_ID: trial_id, KIND: "trial", **(tags or {})},
        )
        self.children[trial_id] = run.info.run_id
        self._started[trial_id] = time.time()
        self._history[trial_id] = {}
        RunLogger(self.client, run.info.run_id).params(params)
        RunLogger(self.client, run.info.run_id).datasets(self.datasets)

    def log_epoch(self, trial_id: str, epoch: int, logs: dict[str, float]) -> None:
        RunLogger(self.client, self.children[trial_id]).metrics(logs, step=epoch)
        history = self._history[trial_id]
        for key, value in logs.items():
            history.setdefault(key, []).append(value)

    def end_trial(self, trial_id: str, title: str, best: dict[str, float] | None, model=None, error: str = "") -> None:
        """Close the trial's run: with its best-epoch metrics, curves and checkpoint (best: metric
        name -> value), or, when best is None, FAILED with the error message."""
        run = RunLogger(self.client, self.children[trial_id])
        seconds = time.time() - self._started.pop(trial_id, time.time())
        run.metrics({"trial_seconds": seconds, "rss_mb": rss_mb()})
        history = self._history.pop(trial_id, {})
        if best is None or model is None:
            message = error.strip() or "unknown error"
            run.tags({"error": last_line(message)})
            run.text(message, "error.txt")
            run.end("FAILED")
            return
        run.metrics(best)
        if history:
            run.figure(plots.learning_curves(history, title), "plots/learning_curves.png")
        run.keras(model, "checkpoint/head.keras")  # the best epoch's weights, as ModelCheckpoint keeps
        run.end("FINISHED")


# ---- final runs ---------------------------------------------------------------------------------


def best_from_search(uri: str, experiment: str, run_id: str | None = None) -> tuple[str, dict[str, str]]:
    """(parent run id, best hyperparameters as strings) of a tune search: run_id, or the latest finished one."""
    client, experiment_id = connect(uri, experiment)
    if run_id:
        try:
            run = client.get_run(run_id)
        except MlflowException:
            raise ConfigError(f"from_run={run_id}: no such run in {uri}") from None
        if run.data.tags.get(KIND) != "search":
            raise ConfigError(f"from_run={run_id}: run is not a tune search (its kind is {run.data.tags.get(KIND)})")
    else:
        run = _latest_finished(client, experiment_id, "search")
        if run is None:
            raise ConfigError(
                f"no finished tune search in experiment '{experiment}' of {uri}: run `python -m fashion_exp tune` "
                "first, or pass from_run=<run id>"
            )
    best = {k[len("best.") :]: v for k, v in run.data.params.items() if k.startswith("best.")}
    if not best:
        raise ConfigError(f"tune run {run.info.run_id} has no best hyperparameters (did every trial fail?)")
    return run.info.run_id, best


class RunLogger:
    """One MLflow run written through explicit ids: params, per-step metrics, files and figures."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client = client
        self.run_id = run_id

    @classmethod
    def start(cls, uri: str, experiment: str, run_name: str, tags: dict[str, str]) -> RunLogger:
        client, experiment_id = connect(uri, experiment)
        run = client.create_run(experiment_id, run_name=run_name, tags=tags)
        return cls(client, run.info.run_id)

    @classmethod
    def reopen(cls, uri: str, run_id: str) -> RunLogger:
        client = open_client(uri)
        try:
            client.get_run(run_id)
        except MlflowException:
            raise ConfigError(f"run {run_id} not found in {uri}") from None
        return cls(client, run_id)

    def params(self, values: dict[str, Any]) -> None:
        existing = self.client.get_run(self.run_id).data.params
        new = [Param(k, _short(str(v))) for k, v in values.items() if k not in existing]
        for start in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[start : start + 100])

    def metrics(self, values: dict[str, float], step: int = 0, model_of: dict[str, Any] | None = None) -> None:
        """model_of: a dataset record (Dataset.describe) whose scores these are, for the run's
        LoggedModel (registry.MODEL_ID): the model's page then shows them, with the dataset."""
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
        self.client.log_batch(self.run_id, tags=[RunTag(k, _short(str(v), 5000)) for k, v in values.items()])

    def text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def json(self, value: Any, name: str) -> None:
        self.client.log_dict(self.run_id, value, name)

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


def download_artifact(uri: str, run_id: str, path: str) -> str | None:
    """Local path of a run's artifact, or None if the run has no such artifact."""
    client = open_client(uri)
    folder = path.rsplit("/", 1)[0] if "/" in path else None
    if path not in [a.path for a in client.list_artifacts(run_id, folder)]:
        return None
    return client.download_artifacts(run_id, path)
